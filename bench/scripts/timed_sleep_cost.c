/* The CPU one timed sleep costs: 5,000 sleeps of 1 ms (timer slack 1 us, as the load
 * generator's workers set it), the thread's CPU time from /proc/self/schedstat.
 *   gcc -O2 bench/scripts/timed_sleep_cost.c -o /tmp/sleep_cost && taskset -c 0 /tmp/sleep_cost
 * (docs/benchmarks.md, "What a timed wake-up costs here"). */
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>

int main(void) {
    const int n = 5000;
    struct timespec t = {0, 1000000};
    unsigned long long cpu_ns = 0;
    prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0);
    for (int i = 0; i < n; i++)
        nanosleep(&t, NULL);
    FILE *f = fopen("/proc/self/schedstat", "r");
    if (!f || fscanf(f, "%llu", &cpu_ns) != 1) {
        perror("/proc/self/schedstat");
        return 1;
    }
    printf("CPU per 1 ms sleep: %.1f us\n", cpu_ns / 1e3 / n);
    return 0;
}
