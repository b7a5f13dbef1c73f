#define _GNU_SOURCE
#include "rt_internal.h"
#include <errno.h>
#include <stddef.h>

volatile int hookit_rt_time_enabled = 1;
volatile int hookit_rt_cpus = 1;

// Initial-exec TLS: reading it is one fs-relative load, never a call into the loader (which
// could allocate, and so re-enter a hooked malloc). glibc keeps static TLS surplus for exactly
// this case of a dlopen'd library; dlopen fails cleanly if there is none.
static __thread int hookit_rt_active __attribute__((tls_model("initial-exec")));
// This thread's errno, found once: `errno` is a call to __errno_location, which may be hooked
// (the first lookup then counts as one miss on it; later runs call nothing).
static __thread int *hookit_rt_errno __attribute__((tls_model("initial-exec")));
__thread int hookit_rt_pending_errno __attribute__((tls_model("initial-exec")));

// Offset of glibc's `tid` field of struct pthread from the thread pointer, found by hookit (it
// reads each thread's fs base and tid); 0: unknown, ask the kernel. glibc keeps the field right
// in a forked child, which a tid cached here would not be.
volatile long hookit_rt_tid_offset = 0;

uint32_t hookit_rt_tid(void) {
    long off = hookit_rt_tid_offset;
    if (off) return *(const volatile uint32_t *)((const char *)__builtin_thread_pointer() + off);
    return (uint32_t)rt_syscall3(186 /* gettid */, 0, 0, 0);
}

// Time stamp counter ticks (constant and non-stop on the CPUs hookit runs on): reading it calls
// no libc function, which may itself be hooked; hookit converts ticks to nanoseconds.
static uint64_t now_ticks(void) { return __builtin_ia32_rdtsc(); }

// glibc (2.35+) registers an rseq area per thread at this offset from the thread pointer;
// weak, so a libc without them leaves both at 0 (CPU 0's cells for everyone).
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

// This CPU's cells: threads on different CPUs never share a cache line for statistics. The CPU
// number is read straight from the rseq area: no libc call may run before the recursion guard,
// since that very function may be hooked (sched_getcpu would recurse forever).
void *hookit_rt_cpu_cells(void *cpu0) {
    int cpu = 0;
    if (&__rseq_size && __rseq_size >= 8) {
        const char *tp = (const char *)__builtin_thread_pointer();
        cpu = (int)*(const volatile unsigned int *)(tp + __rseq_offset + 4);     // struct rseq.cpu_id
    }
    if (cpu < 0 || cpu >= hookit_rt_cpus) cpu = 0;
    return (char *)cpu0 + (long)cpu * HOOKIT_RT_CPU_STRIDE;
}

uint64_t hookit_rt_run(hookit_prog_fn prog, struct hookit_ctx *ctx, struct hookit_rt_stats *cpu0) {
    struct hookit_rt_stats *stats = hookit_rt_cpu_cells(cpu0);
    if (hookit_rt_active) {
        __atomic_fetch_add(&stats->misses, 1, __ATOMIC_RELAXED);
        return 0;
    }
    hookit_rt_active = 1;
    // The program may call libc; the errno the original just set (fexit) or the caller's
    // (fentry) must be what the tracee sees afterwards (design.md invariant 5).
    if (!hookit_rt_errno) hookit_rt_errno = &errno;
    int saved_errno = *hookit_rt_errno;
    uint64_t r;
    if (hookit_rt_time_enabled) {
        uint64_t t0 = now_ticks();
        r = prog(ctx);
        __atomic_fetch_add(&stats->nsecs, now_ticks() - t0, __ATOMIC_RELAXED);
    } else {
        r = prog(ctx);
    }
    __atomic_fetch_add(&stats->calls, 1, __ATOMIC_RELAXED);
    *hookit_rt_errno = saved_errno;
    if (hookit_rt_pending_errno) {
        *hookit_rt_errno = hookit_rt_pending_errno;
        hookit_rt_pending_errno = 0;
    }
    hookit_rt_active = 0;
    return r;
}
