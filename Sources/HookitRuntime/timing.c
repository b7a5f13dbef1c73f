// --count with time: calls, total nanoseconds and a log2 histogram per function, in per-CPU
// cells (the cookie is CPU 0's block; hookit sums the CPUs).
#include "rt_internal.h"

// Nanoseconds per TSC tick in 32.32 fixed point, set by hookit.
volatile uint64_t hookit_rt_ns_per_tick_q32 = 1ull << 32;

enum { CALLS = 0, NSECS = 1, HIST = 2, BUCKETS = 65 };   // bucket k: [2^(k-1), 2^k) ns; 0: 0 ns

// Calls are counted on entry: a call in flight while its image is replaced comes back through
// the old image's epilogue, which skips fexit programs (see ImageBuilder) — its time is lost,
// never the call. The histogram's total is the number of timed calls.
uint64_t hookit_rt_time_enter(struct hookit_ctx *ctx) {
    uint64_t *cells = (uint64_t *)(uintptr_t)ctx->cookie;
    rt_percpu_add(&cells[CALLS], 1);
    ctx->scratch[1] = rt_ticks();
    return 0;
}

uint64_t hookit_rt_time_exit(struct hookit_ctx *ctx) {
    if (!ctx->scratch[1]) return 0;
    uint64_t ticks = rt_ticks() - ctx->scratch[1];
    uint64_t ns = (uint64_t)(((unsigned __int128)ticks * hookit_rt_ns_per_tick_q32) >> 32);
    unsigned bucket = ns ? 64 - (unsigned)__builtin_clzll(ns) : 0;
    uint64_t *cells = (uint64_t *)(uintptr_t)ctx->cookie;
    rt_percpu_add(&cells[NSECS], ns);
    rt_percpu_add(&cells[HIST + bucket], 1);
    return 0;
}

// With a filter decided at the call's exit (on `ret` or `ns`): the entry only takes the time, and
// a call is counted at its exit, once it passed. (A call in flight across a live change is then
// not counted at all, rather than counted without its filter.)
uint64_t hookit_rt_time_stamp(struct hookit_ctx *ctx) {
    ctx->scratch[1] = rt_ticks();
    return 0;
}

uint64_t hookit_rt_time_exit_count(struct hookit_ctx *ctx) {
    uint64_t *cells = (uint64_t *)(uintptr_t)ctx->cookie;
    rt_percpu_add(&cells[CALLS], 1);
    return hookit_rt_time_exit(ctx);
}
