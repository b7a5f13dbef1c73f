#define _GNU_SOURCE
#include "rt_internal.h"
#include <errno.h>
#include <stddef.h>

volatile int hookit_rt_time_enabled = 0;
volatile int hookit_rt_cpus = 1;

// Initial-exec TLS: reading it is one fs-relative load, never a call into the loader (which
// could allocate, and so re-enter a hooked malloc). glibc keeps static TLS surplus for exactly
// this case of a dlopen'd library; dlopen fails cleanly if there is none.
static __thread int hookit_rt_active __attribute__((tls_model("initial-exec")));
// This thread's errno, found once: `errno` is a call to __errno_location, which may be hooked
// (the first lookup then counts as one miss on it; later runs call nothing).
static __thread int *hookit_rt_errno __attribute__((tls_model("initial-exec")));

// Offset of glibc's `tid` field of struct pthread from the thread pointer, found by hookit (it
// reads each thread's fs base and tid); 0: unknown, ask the kernel. glibc keeps the field right
// in a forked child, which a tid cached here would not be.
volatile long hookit_rt_tid_offset = 0;

uint32_t hookit_rt_tid(void) {
    long off = hookit_rt_tid_offset;
    if (off) return *(const volatile uint32_t *)((const char *)__builtin_thread_pointer() + off);
    return (uint32_t)rt_syscall3(186 /* gettid */, 0, 0, 0);
}


int *hookit_rt_errno_location(void) {
    if (hookit_rt_errno) return hookit_rt_errno;
    if (hookit_rt_active) return 0;
    hookit_rt_active = 1;
    hookit_rt_errno = &errno;
    hookit_rt_active = 0;
    return hookit_rt_errno;
}

// Statistics are per-CPU rseq adds (no locked instruction, no shared line); time costs two TSC
// reads per run, so it is kept only when hookit asks (the kernel's bpf_stats_enabled).
uint64_t hookit_rt_run(hookit_prog_fn prog, struct hookit_ctx *ctx, struct hookit_rt_stats *cpu0) {
    if (hookit_rt_active) {
        rt_percpu_add(&cpu0->misses, 1);
        return 0;
    }
    hookit_rt_active = 1;
    // The program may call libc; the errno the original just set (fexit) or the caller's
    // (fentry) must be what the tracee sees afterwards (design.md invariant 5).
    if (!hookit_rt_errno) hookit_rt_errno = &errno;
    int saved_errno = *hookit_rt_errno;
    uint64_t r;
    if (hookit_rt_time_enabled) {
        uint64_t t0 = rt_ticks();
        r = prog(ctx);
        rt_percpu_add(&cpu0->nsecs, rt_ticks() - t0);
    } else {
        r = prog(ctx);
    }
    rt_percpu_add(&cpu0->calls, 1);
    *hookit_rt_errno = saved_errno;
    hookit_rt_active = 0;
    return r;
}
