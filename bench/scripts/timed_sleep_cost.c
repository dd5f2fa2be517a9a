/* The CPU one timed sleep costs: 3,000 sleeps of PERIOD ns (default 1 ms; timer slack
 * 1 us, as the load generator's workers set it), the thread's CPU time from
 * /proc/thread-self/schedstat, two ways: a one-shot timer armed per sleep (nanosleep;
 * the load generator's waits with a timeout are of this kind) and a periodic timerfd
 * (armed once, re-armed by the kernel at each expiry, a blocking read per period).
 *   gcc -O2 bench/scripts/timed_sleep_cost.c -o /tmp/sleep_cost && taskset -c 0 /tmp/sleep_cost [PERIOD_NS]
 * (docs/benchmarks.md, "What a timed wake-up costs here"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static unsigned long long cpu_ns(void) {
    unsigned long long ns = 0;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (!f || fscanf(f, "%llu", &ns) != 1) {
        perror("/proc/thread-self/schedstat");
        exit(1);
    }
    fclose(f);
    return ns;
}

int main(int argc, char **argv) {
    const int n = 3000;
    long period = argc > 1 ? atol(argv[1]) : 1000000;
    if (period <= 0 || period >= 1000000000) {
        fprintf(stderr, "usage: %s [PERIOD_NS, 1..999999999]\n", argv[0]);
        return 2;
    }
    prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0);
    struct timespec t = {0, period};
    unsigned long long c0 = cpu_ns();
    for (int i = 0; i < n; i++)
        nanosleep(&t, NULL);
    unsigned long long c1 = cpu_ns();
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {{0, period}, {0, period}};
    if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0) {
        perror("timerfd");
        return 1;
    }
    uint64_t expiries;
    for (int i = 0; i < n; i++)
        if (read(tfd, &expiries, sizeof expiries) != sizeof expiries) {
            perror("read timerfd");
            return 1;
        }
    unsigned long long c2 = cpu_ns();
    printf("CPU per sleep of %ld ns: one-shot (nanosleep) %.1f us, periodic timerfd %.1f us\n",
           period, (c1 - c0) / 1e3 / n, (c2 - c1) / 1e3 / n);
    return 0;
}
