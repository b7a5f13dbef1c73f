/* hookit.h — the ABI that hook programs are written against.
 *
 * A program is a C function in a shared library that hookit loads into the traced process:
 *
 *     uint64_t NAME(struct hookit_ctx *ctx);
 *
 * attached with `hookit attach PID --prog KIND:[MODULE:]FUNCTION=/abs/lib.so:NAME[,cookie=N]`.
 *
 *   fentry    runs before the function; sees its arguments. Return value ignored.
 *   fexit     runs after the function returned; sees the arguments as passed and the return
 *             value (ret, ret_hi, xmm_ret). Return value ignored.
 *   fmod_ret  runs after fentry, before the function. Return 0 to let the function run;
 *             non-zero to skip it: the function then returns ctx->ret in rax, and fexit
 *             programs see that value. ctx->ret_hi and ctx->xmm_ret start out holding the
 *             caller's rdx, xmm0 and xmm1, so a program that sets only ctx->ret leaves those
 *             registers as the caller had them (a caller built with gcc -O2 may keep values
 *             there); set them to return a 128-bit, two-word or floating-point value.
 *   replace   not a program: every call goes to NAME instead, a function with the hooked
 *             function's own signature. HOOKIT_ORIGINAL below gives it the original. NAME
 *             may change any caller-saved register: when it may change one that the hooked
 *             function leaves alone, hookit calls it from a wrapper that gives that register
 *             back (rax, and rdx/xmm0/xmm1/st0 where the hooked function writes them, come
 *             back as NAME set them).
 *
 * Programs run on the calling thread, on its stack, with the stack 16-byte aligned. A program
 * that calls (directly or not) a function hooked by hookit does not recurse into programs: the
 * nested run is skipped and counted as a miss.
 */
#ifndef HOOKIT_H
#define HOOKIT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

union hookit_xmm {
    double d[2];
    float f[4];
    uint64_t q[2];
};

struct hookit_ctx {
    uint64_t args[6];   /* rdi rsi rdx rcx r8 r9, as the function received them */
    uint64_t ret;       /* return value (rax): fexit reads it; fmod_ret sets it */
    uint64_t func_ip;   /* the hooked function's address */
    uint64_t cookie;    /* this attachment's cookie */
    uint64_t ret_hi;    /* rdx after return: the high half of a 128-bit or two-word struct return
                           (before the function runs: the caller's rdx) */
    uint64_t entry_sp;  /* rsp at function entry: [0] is the return address, [1..] stack arguments */
    uint64_t nvec;      /* al at entry: vector registers used by a variadic call */
    union hookit_xmm xmm_args[8];   /* xmm0-7 at entry (float and double arguments) */
    union hookit_xmm xmm_ret[2];    /* xmm0, xmm1 after return: float/double return values
                                       (before the function runs: the caller's xmm0, xmm1) */
    uint64_t scratch[2];  /* zero at entry; one call's fentry programs may leave values here for
                             its fexit programs (hookit's own trace and timing use them) */
};

/* The i-th argument passed on the stack (the 7th integer argument is hookit_stack_arg(ctx, 0)). */
static inline uint64_t hookit_stack_arg(const struct hookit_ctx *ctx, unsigned i) {
    return ((const uint64_t *)(uintptr_t)ctx->entry_sp)[1 + i];
}

/* The caller's return address. */
static inline uint64_t hookit_return_address(const struct hookit_ctx *ctx) {
    return ((const uint64_t *)(uintptr_t)ctx->entry_sp)[0];
}

/* In a replace library: declares the pointer through which the replacement calls the original
 * function. hookit fills it in before the replacement receives its first call:
 *
 *     HOOKIT_ORIGINAL(add, int, (int, int));
 *     int my_add(int a, int b) { return hookit_original_add(a, b) + 1; }
 *
 * `add` is the hooked function's name; hookit looks the variable up by that name. */
#define HOOKIT_ORIGINAL(function, ret, params) \
    __attribute__((visibility("protected"))) ret (*hookit_original_##function) params

#ifdef __cplusplus
}
#endif

#endif /* HOOKIT_H */
