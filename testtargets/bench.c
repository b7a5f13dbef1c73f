// The benchmark target. Commands on stdin, one answer line each (as target.c):
//   run N T   T threads each call bench_fn N times through a volatile pointer, timed inside the
//             process; answers "ns_per_call TOTAL_CALLS CHECKSUM" (wall time of the slowest
//             thread divided by N: the per-call cost as each thread sees it).
//   use K     what `run` calls: 0 bench_fn and 1 bench_fn_patchable through the pointer, 2
//             bench_fn_direct by a direct call from this file (gcc -O2's -fipa-ra lets that
//             loop keep values in caller-saved registers across the call, as real callers do).
//   many A B  calls many_A .. many_(B-1) once each; answers the sum of their results.
//   idle T    starts T threads that sleep (for attach-time rows with many threads); "idle T".
//   quit
// bench_fn and bench_fn_nop are ordinary functions (relocated entries); bench_fn_patchable has a
// patchable entry. many.c (generated) adds many_0 .. many_9999 for attach-time rows.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline, noipa, used)) long bench_fn(long x) { return x * 3 + 1; }

__attribute__((noinline, noipa, used, patchable_function_entry(5, 0))) long bench_fn_patchable(long x) { return x * 3 + 1; }

// No noipa: the direct-call loop below sees its body, so -fipa-ra applies to it.
__attribute__((noinline, used)) long bench_fn_direct(long x) { return x * 3 + 1; }

static long (*volatile fn_ptr)(long) = bench_fn;
static volatile int direct;

struct worker { long n; long ns; long sum; pthread_t t; };

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *work(void *arg) {
    struct worker *w = arg;
    long sum = 0;
    long (*f)(long) = fn_ptr;
    long t0 = now_ns();
    if (direct) for (long i = 0; i < w->n; i++) sum += bench_fn_direct(i);
    else for (long i = 0; i < w->n; i++) sum += f(i);
    w->ns = now_ns() - t0;
    w->sum = sum;
    return NULL;
}

static void *sleeper(void *arg) { (void)arg; for (;;) pause(); return NULL; }

extern long (*const many_table[10000])(long);

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", getpid());
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = {0};
        long a = 0, b = 0;
        if (sscanf(line, "%31s %ld %ld", cmd, &a, &b) < 1) continue;
        if (!strcmp(cmd, "run")) {
            long threads = b > 0 ? b : 1;
            struct worker *w = calloc((size_t)threads, sizeof *w);
            for (long i = 0; i < threads; i++) { w[i].n = a; pthread_create(&w[i].t, NULL, work, &w[i]); }
            long worst = 0, sum = 0;
            for (long i = 0; i < threads; i++) {
                pthread_join(w[i].t, NULL);
                if (w[i].ns > worst) worst = w[i].ns;
                sum += w[i].sum;
            }
            printf("%.3f %ld %ld\n", (double)worst / (double)a, a * threads, sum);
            free(w);
        } else if (!strcmp(cmd, "use")) {
            direct = a == 2;
            fn_ptr = a == 1 ? bench_fn_patchable : bench_fn;
            printf("using %s\n", a == 2 ? "bench_fn_direct" : a == 1 ? "bench_fn_patchable" : "bench_fn");
        } else if (!strcmp(cmd, "many")) {
            long sum = 0;
            for (long i = a; i < b && i < 10000; i++) sum += many_table[i](1);
            printf("%ld\n", sum);
        } else if (!strcmp(cmd, "idle")) {
            for (long i = 0; i < a; i++) { pthread_t t; pthread_create(&t, NULL, sleeper, NULL); }
            printf("idle %ld\n", a);
        } else if (!strcmp(cmd, "quit")) {
            printf("bye\n");
            return 0;
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
