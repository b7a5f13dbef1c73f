#define _GNU_SOURCE
#include "hookit_rt.h"
#include <errno.h>
#include <sched.h>
#include <time.h>

volatile int hookit_rt_time_enabled = 1;
volatile int hookit_rt_cpus = 1;

// Initial-exec TLS: reading it is one fs-relative load, never a call into the loader (which
// could allocate, and so re-enter a hooked malloc). glibc keeps static TLS surplus for exactly
// this case of a dlopen'd library; dlopen fails cleanly if there is none.
static __thread int hookit_rt_active __attribute__((tls_model("initial-exec")));

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// This CPU's cells: threads on different CPUs never share a cache line for statistics.
// sched_getcpu reads the rseq area glibc maintains, one load.
static struct hookit_rt_stats *cells(struct hookit_rt_stats *cpu0) {
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= hookit_rt_cpus) cpu = 0;
    return (struct hookit_rt_stats *)((char *)cpu0 + (long)cpu * HOOKIT_RT_CPU_STRIDE);
}

uint64_t hookit_rt_run(hookit_prog_fn prog, struct hookit_ctx *ctx, struct hookit_rt_stats *cpu0) {
    struct hookit_rt_stats *stats = cells(cpu0);
    if (hookit_rt_active) {
        __atomic_fetch_add(&stats->misses, 1, __ATOMIC_RELAXED);
        return 0;
    }
    hookit_rt_active = 1;
    // The program may call libc; the errno the original just set (fexit) or the caller's
    // (fentry) must be what the tracee sees afterwards (design.md invariant 5).
    int saved_errno = errno;
    uint64_t r;
    if (hookit_rt_time_enabled) {
        uint64_t t0 = now_ns();
        r = prog(ctx);
        __atomic_fetch_add(&stats->nsecs, now_ns() - t0, __ATOMIC_RELAXED);
    } else {
        r = prog(ctx);
    }
    __atomic_fetch_add(&stats->calls, 1, __ATOMIC_RELAXED);
    errno = saved_errno;
    hookit_rt_active = 0;
    return r;
}
