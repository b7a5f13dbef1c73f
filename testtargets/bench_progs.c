// Programs for the benchmark: the cheapest C program, and replacements for bench_fn.
#include "hookit.h"

uint64_t bench_noop(struct hookit_ctx *ctx) { (void)ctx; return 0; }

// A program that really uses SSE registers: double arithmetic on the argument, kept in an xmm
// register by the asm so the compiler cannot drop it. Such a library needs the vector state
// saved around its programs whatever the engine proves about others.
uint64_t bench_uses_sse(struct hookit_ctx *ctx) {
    double d = (double)(int64_t)ctx->args[0] * 1.000001 + 0.5;
    __asm__ volatile("" ::"x"(d));
    return 0;
}

HOOKIT_ORIGINAL(bench_fn, long, (long));

// Does bench_fn's own work: the cost of replace itself.
long bench_fn_replacement(long x) { return x * 3 + 1; }

// Calls the original through the address hookit hands over.
long bench_fn_via_original(long x) { return hookit_original_bench_fn(x); }

HOOKIT_ORIGINAL(bench_fn_direct, long, (long));

// The same for the direct-call loop's function.
long bench_fn_direct_via_original(long x) { return hookit_original_bench_fn_direct(x); }

// bench_fn's work, but free with registers as any C function may be (here on purpose): a
// replacement hookit must wrap to give back what bench_fn leaves alone.
long bench_fn_clobbering(long x) {
    __asm__ volatile("xor %%ecx, %%ecx; xor %%r8d, %%r8d; pxor %%xmm2, %%xmm2" ::: "rcx", "r8", "xmm2");
    return x * 3 + 1;
}
