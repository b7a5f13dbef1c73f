// Hook programs for the end-to-end tests (libprogs.so). Each records what it saw in exported
// globals: the tests read them by symbol from the tracee, and hooktarget's "progs" and
// "fibpairs" commands print them. Programs call nothing but atomics (and, once, dlsym in
// calls_add), never stdio.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "hookit.h"

#define EXPORT __attribute__((visibility("default"), used))

// count_entry (fentry)
EXPORT long progs_entry_count;
EXPORT uint64_t progs_last_arg0, progs_last_arg1, progs_last_ip, progs_last_cookie;

// record_exit / double_ret (fexit)
EXPORT long progs_exit_count;
EXPORT uint64_t progs_exit_arg0, progs_exit_arg1, progs_exit_ret;

// pass_through (fmod_ret)
EXPORT long progs_pass_count;

// order_a / order_b / order_c (fentry): the letters in the order the programs ran
EXPORT char progs_order[64];
EXPORT long progs_order_index;

// calls_add (fentry)
EXPORT long progs_recursive_count;
EXPORT long progs_recursive_ret;

// fmod_fib (fexit): (n, fib(n)) for each level, in the order the levels returned
EXPORT long progs_fib_pairs[64][2];
EXPORT long progs_fib_count;  // how many levels returned (may exceed 64; only 64 are kept)

// see_stack_args (fexit)
EXPORT uint64_t progs_stack7, progs_stack8, progs_stack_ret;

// see_floats (fexit)
EXPORT double progs_float_arg0, progs_float_arg1, progs_float_ret;
EXPORT float progs_float_farg0, progs_float_fret;  // the same, read as floats (fhalf)

EXPORT uint64_t count_entry(struct hookit_ctx *ctx) {
    __atomic_fetch_add(&progs_entry_count, 1, __ATOMIC_SEQ_CST);
    progs_last_arg0 = ctx->args[0];
    progs_last_arg1 = ctx->args[1];
    progs_last_ip = ctx->func_ip;
    progs_last_cookie = ctx->cookie;
    return 0;
}

EXPORT uint64_t record_exit(struct hookit_ctx *ctx) {
    progs_exit_arg0 = ctx->args[0];
    progs_exit_arg1 = ctx->args[1];
    progs_exit_ret = ctx->ret;
    __atomic_fetch_add(&progs_exit_count, 1, __ATOMIC_SEQ_CST);
    return 0;
}

EXPORT uint64_t skip_with_42(struct hookit_ctx *ctx) {
    ctx->ret = 42;
    return 1;
}

EXPORT uint64_t skip_with_zero(struct hookit_ctx *ctx) {
    ctx->ret = 0;
    return 1;
}

EXPORT uint64_t pass_through(struct hookit_ctx *ctx) {
    (void)ctx;
    __atomic_fetch_add(&progs_pass_count, 1, __ATOMIC_SEQ_CST);
    return 0;
}

// With record_exit attached too, progs_exit_ret ends up ret*2 if double_ret runs last and
// ret if record_exit does.
EXPORT uint64_t double_ret(struct hookit_ctx *ctx) {
    progs_exit_ret = ctx->ret * 2;
    return 0;
}

static void append_order(char c) {
    long i = __atomic_fetch_add(&progs_order_index, 1, __ATOMIC_SEQ_CST);
    if (i >= 0 && i < (long)sizeof progs_order - 1) progs_order[i] = c;
}

EXPORT uint64_t order_a(struct hookit_ctx *ctx) { (void)ctx; append_order('a'); return 0; }
EXPORT uint64_t order_b(struct hookit_ctx *ctx) { (void)ctx; append_order('b'); return 0; }
EXPORT uint64_t order_c(struct hookit_ctx *ctx) { (void)ctx; append_order('c'); return 0; }

// Calls the target's own add(1, 2). Attached to add itself, the nested call must not run the
// programs again (hookit counts it as a miss), so progs_recursive_count goes up exactly once
// per outer call of add.
static long (*add_fn)(long, long);

EXPORT uint64_t calls_add(struct hookit_ctx *ctx) {
    (void)ctx;
    __atomic_fetch_add(&progs_recursive_count, 1, __ATOMIC_SEQ_CST);
    long (*f)(long, long) = __atomic_load_n(&add_fn, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (long (*)(long, long))dlsym(RTLD_DEFAULT, "add");
        __atomic_store_n(&add_fn, f, __ATOMIC_RELEASE);
    }
    if (f) progs_recursive_ret = f(1, 2);
    return 0;
}

// Named for the recursion tests on fib; attached as fexit.
EXPORT uint64_t fmod_fib(struct hookit_ctx *ctx) {
    long i = __atomic_fetch_add(&progs_fib_count, 1, __ATOMIC_SEQ_CST);
    if (i >= 0 && i < 64) {
        progs_fib_pairs[i][0] = (long)ctx->args[0];
        progs_fib_pairs[i][1] = (long)ctx->ret;
    }
    return 0;
}

// For sum8: the 7th and 8th arguments are on the stack.
EXPORT uint64_t see_stack_args(struct hookit_ctx *ctx) {
    progs_stack7 = hookit_stack_arg(ctx, 0);
    progs_stack8 = hookit_stack_arg(ctx, 1);
    progs_stack_ret = ctx->ret;
    return 0;
}

// For fmuladd / fargs8 (doubles) and fhalf (floats).
EXPORT uint64_t see_floats(struct hookit_ctx *ctx) {
    progs_float_arg0 = ctx->xmm_args[0].d[0];
    progs_float_arg1 = ctx->xmm_args[1].d[0];
    progs_float_ret = ctx->xmm_ret[0].d[0];
    progs_float_farg0 = ctx->xmm_args[0].f[0];
    progs_float_fret = ctx->xmm_ret[0].f[0];
    return 0;
}

// Not a program: zeroes everything above (a test can call it remotely between cases).
EXPORT void progs_reset(void) {
    progs_entry_count = 0;
    progs_last_arg0 = progs_last_arg1 = progs_last_ip = progs_last_cookie = 0;
    progs_exit_count = 0;
    progs_exit_arg0 = progs_exit_arg1 = progs_exit_ret = 0;
    progs_pass_count = 0;
    memset(progs_order, 0, sizeof progs_order);
    progs_order_index = 0;
    progs_recursive_count = progs_recursive_ret = 0;
    memset(progs_fib_pairs, 0, sizeof progs_fib_pairs);
    progs_fib_count = 0;
    progs_stack7 = progs_stack8 = progs_stack_ret = 0;
    progs_float_arg0 = progs_float_arg1 = progs_float_ret = 0;
    progs_float_farg0 = progs_float_fret = 0;
}

// Changes vector registers, as code compiled for SSE may: the image must save the vector state
// around it (RegisterPreservationTests, and ProgramVectorStateTests check it does).
EXPORT long progs_vector_count;

EXPORT uint64_t clobber_vectors(struct hookit_ctx *ctx) {
    (void)ctx;
    __asm__ volatile("pxor %%xmm0, %%xmm0\n\tpcmpeqd %%xmm5, %%xmm5\n\tpcmpeqd %%xmm15, %%xmm15"
                     ::: "xmm0", "xmm5", "xmm15");
    __atomic_fetch_add(&progs_vector_count, 1, __ATOMIC_SEQ_CST);
    return 0;
}
