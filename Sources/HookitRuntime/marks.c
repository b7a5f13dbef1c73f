// Marks: a program hookit links at the entry of the functions that end calls without their
// returning (longjmp and its kin, __cxa_begin_catch, pthread_exit, exit and _exit), so that
// the trace and the timed counts end those calls where that happened.
#include "rt_internal.h"

// glibc keeps the stack pointer in a jmp_buf mangled (PTR_MANGLE: xor with the thread's
// pointer guard at %fs:0x30, then rotate left by 17); word 6 of the buffer is rsp.
static uint64_t jmp_buf_sp(uint64_t env) {
    uint64_t guard, v = ((const volatile uint64_t *)env)[6];
    __asm__("movq %%fs:0x30, %0" : "=r"(guard));
    return ((v >> 17) | (v << 47)) ^ guard;
}

// The cookie says which function this is: 1 longjmp and its kin (the calls below the saved
// stack pointer are left), 2 __cxa_begin_catch (the calls below the catching frame were
// unwound: the frame that calls it is the catcher's), 3 pthread_exit, 4 exit and _exit.
uint64_t hookit_rt_mark(struct hookit_ctx *ctx) {
    uint64_t now = rt_ticks(), sp = 0;
    unsigned kind = EV_UNWIND;
    switch (ctx->cookie) {
    case 1:
        if (ctx->args[0] < 4096) return 0;
        sp = jmp_buf_sp(ctx->args[0]);
        // A longjmp goes up its stack: a target at or below this frame is another stack's (a
        // user-level thread switch), which ends no call.
        if (sp <= ctx->entry_sp) return 0;
        break;
    case 2: sp = ctx->entry_sp + 1; break;
    case 3: kind = EV_THREAD_EXIT; break;
    default: kind = EV_EXIT; break;
    }
    // A vfork child (posix_spawn's, whose exec failed) runs on its parent thread's TLS and
    // thread pointer: its _exit is not that thread's.
    if (kind != EV_UNWIND && (uint32_t)rt_syscall3(186 /* gettid */, 0, 0, 0) != hookit_rt_tid()) return 0;
    rt_time_mark(kind, sp, now);
    rt_trace_mark(kind, sp, now);
    return 0;
}
