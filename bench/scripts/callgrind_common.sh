# Sourced by the callgrind_*.sh scripts: the pieces of a slope between two runs, and
# $dir, a folder for their files, removed on exit.

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# The instructions callgrind counted in the files matching $1* (a run's threads).
cg_instructions() {
  callgrind_annotate "$1"* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

# The messages a `soliton-load --json` report says were received.
load_received() {
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['messages']['received_total'])" "$1"
}

# slope INSTR_SHORT INSTR_LONG COUNT_SHORT COUNT_LONG UNIT LABEL: the instructions per
# UNIT between the two runs, so that start-up and handshakes drop out.
slope() {
  python3 -c "
import sys
i1, i2, n1, n2 = map(int, sys.argv[1:5])
print('%s: %.1f instructions per %s (%d and %d of them in the two runs)' % (sys.argv[6], (i2 - i1) / (n2 - n1), sys.argv[5], n1, n2))
" "$@"
}
