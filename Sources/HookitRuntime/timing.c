// --count with time: calls, total nanoseconds and a log2 histogram per function, in per-CPU
// cells (the cookie is CPU 0's block; hookit sums the CPUs).
#include "rt_internal.h"

// Nanoseconds per TSC tick in 32.32 fixed point, set by hookit.
volatile uint64_t hookit_rt_ns_per_tick_q32 = 1ull << 32;

enum { CALLS = 0, NSECS = 1, HIST = 2, BUCKETS = 65 };   // bucket k: [2^(k-1), 2^k) ns; 0: 0 ns

// A call that does not return (longjmp, an exception, pthread_exit, exit) never reaches
// time_exit: its frame, and the entry time kept in it, are gone. So each thread also keeps its
// outermost open timed calls here, outside the stack, and a call found gone — by a later timed
// call whose frame lies at or above its own, or by a mark (marks.c) — has its time taken to
// that point. Only OPEN deep (static TLS is scarce in a library loaded by dlopen): a call below
// that many open timed calls is timed when it returns, as before, and not when it does not.
#define OPEN 4
struct open_call { uint64_t sp, ticks; uint64_t *cells; };
static __thread struct open_call open_calls[OPEN] __attribute__((tls_model("initial-exec")));
static __thread unsigned open_count __attribute__((tls_model("initial-exec")));

// The session the open calls were kept in: hookit writes a new value at every session (the
// runtime stays loaded across them), and a thread's calls kept in an earlier one point at
// cells that may be unmapped now: they are forgotten, never written to.
volatile uint64_t hookit_rt_time_session;
static __thread uint64_t open_session __attribute__((tls_model("initial-exec")));

// scratch[1]'s low bit: the call is kept in open_calls. Entry times are even (and never 0).
#define KEPT 1ull
static inline uint64_t entry_ticks(void) { return (rt_ticks() | 2) & ~KEPT; }

static inline void forget_other_sessions(void) {
    uint64_t now = hookit_rt_time_session;
    if (open_session != now) {
        open_session = now;
        open_count = 0;
    }
}

// A later call's frame ends an open one only this close above it: farther up it is more
// likely another stack (a sigaltstack handler, a coroutine) than a frame left by a jump.
#define SAME_STACK_SPAN (1ull << 20)

static void account(uint64_t *cells, uint64_t ticks) {
    if ((int64_t)ticks < 0) ticks = 0;      // two CPUs' TSCs a little apart
    uint64_t ns = (uint64_t)(((unsigned __int128)ticks * hookit_rt_ns_per_tick_q32) >> 32);
    unsigned bucket = ns ? 64 - (unsigned)__builtin_clzll(ns) : 0;
    rt_percpu_add(&cells[NSECS], ns);
    rt_percpu_add(&cells[HIST + bucket], 1);
}

// Ends the open calls on top that `gone` says are gone, at `now`. A signal handler's timed
// call may run in the middle of this on the same thread: the count is read once and written
// once, and kept within the array, so at worst a call is ended twice or not at all.
#define END_OPEN_WHILE(gone, now) do {                                  \
        unsigned n_ = open_count;                                       \
        if (n_ > OPEN) n_ = OPEN;                                       \
        while (n_ > 0) {                                                \
            struct open_call *c = &open_calls[n_ - 1];                  \
            if (!(gone)) break;                                         \
            account(c->cells, (now) - c->ticks);                        \
            n_--;                                                       \
        }                                                               \
        open_count = n_;                                                \
    } while (0)

void rt_time_mark(unsigned kind, uint64_t sp, uint64_t now) {
    forget_other_sessions();
    // A jump's target is exact: no span limit. An exit ends them all.
    if (kind == EV_UNWIND) END_OPEN_WHILE(c->sp < sp, now);
    else END_OPEN_WHILE(1, now);
}

// Calls are counted on entry: a call in flight while its image is replaced comes back through
// the old image's epilogue, which skips fexit programs (see ImageBuilder) — its time is lost,
// never the call. The histogram's total is the number of timed calls.
uint64_t hookit_rt_time_enter(struct hookit_ctx *ctx) {
    uint64_t *cells = (uint64_t *)(uintptr_t)ctx->cookie;
    rt_percpu_add(&cells[CALLS], 1);
    uint64_t now = entry_ticks(), sp = ctx->entry_sp;
    ctx->scratch[1] = now;
    forget_other_sessions();
    // Open calls at or above this frame are gone: a live caller's frame is above it.
    END_OPEN_WHILE(c->sp <= sp && sp - c->sp < SAME_STACK_SPAN, now);
    unsigned n = open_count;
    if (n < OPEN) {
        open_calls[n] = (struct open_call){ sp, now, cells };
        open_count = n + 1;
        ctx->scratch[1] = now | KEPT;
    }
    return 0;
}

// A call deeper than the kept ones finds a caller's frame on top (above its own) and leaves it.
// A kept call is taken out by its identity (frame and entry time); one no longer there was
// ended, and timed, by whatever found it gone: it is not timed twice.
uint64_t hookit_rt_time_exit(struct hookit_ctx *ctx) {
    if (!ctx->scratch[1]) return 0;
    uint64_t now = rt_ticks(), sp = ctx->entry_sp, start = ctx->scratch[1] & ~KEPT;
    forget_other_sessions();
    END_OPEN_WHILE(c->sp < sp && sp - c->sp < SAME_STACK_SPAN, now);     // unwound below this call
    if (ctx->scratch[1] & KEPT) {
        unsigned n = open_count, i = n > OPEN ? OPEN : n;
        while (i > 0 && !(open_calls[i - 1].sp == sp && open_calls[i - 1].ticks == start)) i--;
        if (i == 0) return 0;
        for (; i < n && i < OPEN; i++) open_calls[i - 1] = open_calls[i];
        open_count = n - 1;
    }
    account((uint64_t *)(uintptr_t)ctx->cookie, now - start);
    return 0;
}

// With a filter decided at the call's exit (on `ret` or `ns`): the entry only takes the time, and
// a call is counted at its exit, once it passed. (A call in flight across a live change is then
// not counted at all, rather than counted without its filter.)
uint64_t hookit_rt_time_stamp(struct hookit_ctx *ctx) {
    ctx->scratch[1] = entry_ticks();
    return 0;
}

uint64_t hookit_rt_time_exit_count(struct hookit_ctx *ctx) {
    uint64_t *cells = (uint64_t *)(uintptr_t)ctx->cookie;
    rt_percpu_add(&cells[CALLS], 1);
    return hookit_rt_time_exit(ctx);
}
