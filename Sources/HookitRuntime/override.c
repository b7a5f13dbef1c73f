// --override: fault injection as a fmod_ret program. The cookie points at its settings (CPU 0
// cells; written by hookit before the program is linked, never changed after).
#include "rt_internal.h"

// The settings, read on every call by every CPU, and the counters, written by the CPU's own
// threads in its own copy of the block: 128 bytes apart, so the counters of CPU 0's copy never
// share a cache line with the settings every thread reads there (which cost 7 ns a call with
// two threads).
struct override {
    uint64_t value;       // what the skipped function returns
    int64_t err;          // errno to leave in the thread (0: leave errno alone)
    uint64_t every;       // inject on every Nth call (0 or 1: every call)
    uint64_t threshold;   // inject when a random 32-bit number is below this (2^32: always)
    uint64_t apart[12];
    uint64_t calls;       // calls seen
    uint64_t injected;    // calls skipped
};
_Static_assert(__builtin_offsetof(struct override, calls) == 128, "Override.Settings.cells (BuiltinPrograms.swift)");

static __thread uint64_t rng __attribute__((tls_model("initial-exec")));

static uint32_t random32(void) {
    uint64_t x = rng;
    if (!x) x = rt_ticks() * 0x9E3779B97F4A7C15ull | 1;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;       // xorshift64*
    rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

// Called by the image itself (no hookit_rt_run): it calls no libc function, so it cannot recurse,
// and the errno it sets is the one the caller sees, since nothing runs after it on a skip.
uint64_t hookit_rt_override(struct hookit_ctx *ctx) {
    struct override *o = (struct override *)(uintptr_t)ctx->cookie;
    if (o->every > 1) {
        // Every Nth call of the process needs one sequence: CPU 0's cell, shared by all.
        uint64_t n = __atomic_add_fetch(&o->calls, 1, __ATOMIC_RELAXED);
        if (n % o->every != 0) return 0;
    } else {
        rt_percpu_add(&o->calls, 1);
    }
    if (o->threshold < (1ull << 32) && random32() >= o->threshold) return 0;
    rt_percpu_add(&o->injected, 1);
    ctx->ret = o->value;
    if (o->err) {
        int *e = hookit_rt_errno_location();
        if (e) *e = (int)o->err;
    }
    return 1;
}
