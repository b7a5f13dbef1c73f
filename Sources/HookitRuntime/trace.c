// --trace: one event per call, written into a ring that hookit reads from its own mapping of the
// same memfd. Many threads write at once without a lock; nothing here ever waits for the reader.
#include "rt_ring.h"

// The rings (rt_ring.h; TraceRing.swift mirrors them): slots of HOOKIT_RT_SLOT bytes, one event
// each. The first ring's header goes on with the memory strings may be read from directly.
struct ring_header {
    struct rt_ring r;
    uint64_t stable_count;        // ring 0: memory that is never unmapped (modules the process
    uint64_t stable[][2];         // cannot unload), sorted [start, end) pairs
};
_Static_assert(__builtin_offsetof(struct ring_header, stable_count) == 256, "TraceRing.swift's layout");

#define HOOKIT_RT_SLOT 256
#define STR_BYTES 76

// A call is recorded at its entry (arguments, and the strings among them, copied then), so a
// call that never returns is still seen; its end event follows if it returns. The reader pairs
// the two by thread and entry stack pointer, and learns that calls which did not return have
// ended from marks (longjmp, a catch, pthread_exit, exit) and from later events of the thread
// whose frames lie above theirs.

struct event {
    uint64_t turn;
    uint32_t tid, flags;        // bits 16-18: enum event_kind; 2 << n: string n was a null
                                // pointer; 8 << n: string n could not be read
    uint64_t cookie;            // function index (low 32 bits), string mask (bits 32-38), and
                                // this thread's dropped end events so far (bits 40-63)
    uint64_t ts;                // TSC ticks: when it was called, returned, or the mark ran
    uint64_t sp;                // entry and end: rsp at the function's entry; unwind: the calls
                                // whose entry rsp is below it are gone
    uint64_t seq;               // the thread's own event number (see trace_seq)
    uint64_t ret;               // end: the return value
    // An end event (and a mark) ends above: it writes the slot's first cache line only.
    uint64_t args[6];           // entry: the arguments
    char str[2][STR_BYTES];     // entry: the first two string arguments; end: a string return value
};
_Static_assert(sizeof(struct event) == HOOKIT_RT_SLOT, "slot size");

struct ring_header *volatile hookit_rt_ring = 0;

// Each thread numbers its events: a thread that migrates writes its next event into another
// CPU's ring, which the reader may see first; the numbers let it put each thread's events back
// in order. Numbered only once a slot is taken, so a dropped event leaves no gap.
static __thread uint64_t trace_seq __attribute__((tls_model("initial-exec")));
// End events this thread could not write (its ring was full): the reader cannot tell how the
// calls it then finds ended, and says so instead of guessing.
static __thread uint64_t lost_ends __attribute__((tls_model("initial-exec")));

// A string argument (or return value), copied without ever faulting (safe_string.c). Returns
// 0, 2 (null) or 8 (unreadable), shifted by the caller into the event's flags.
static unsigned copy_string(const struct ring_header *ring0, char *dst, uint64_t src) {
    return rt_copy_string(ring0->stable, ring0->stable_count, dst, src, STR_BYTES);
}

// A slot for one event of this thread, numbered, or NULL (the drop counted in the ring, as a
// call for an entry, else as an end).
static struct event *take_slot(struct ring_header *ring0, uint64_t *pos, int entry) {
    struct rt_ring *ring = &ring0->r;
    int percpu = &__rseq_size && __rseq_size >= 8;
    // Entries leave the last quarter of a ring to ends and marks: a call recorded at its entry
    // then almost always gets its end recorded too, even while the reader lags behind.
    uint64_t limit = entry ? ring->capacity - ring->capacity / 4 : ~0ull;
    struct event *e = percpu ? rt_ring_reserve_on_this_cpu(ring, limit, pos, &ring) : rt_ring_reserve_shared(ring, limit, pos);
    if (!e) {
        __atomic_fetch_add(entry ? &ring->dropped : &ring->dropped_ends, 1, __ATOMIC_RELAXED);
        if (!entry) lost_ends++;
        return 0;
    }
    // One instruction (xadd on the thread's own word, no lock needed): a signal handler that
    // traces on this thread between a load and a store would otherwise reuse a number.
    uint64_t seq = 1;
    __asm__ volatile("xaddq %0, %1" : "+r"(seq), "+m"(trace_seq));
    e->seq = seq + 1;
    e->tid = hookit_rt_tid();
    return e;
}

static void publish(struct ring_header *ring0, struct event *e, uint64_t pos) {
    __atomic_store_n(&e->turn, (pos & ~(ring0->r.capacity - 1)) + 1, __ATOMIC_RELEASE);
}

static uint64_t tagged(uint64_t cookie) { return (cookie & 0xFFFFFFFFFFull) | lost_ends << 40; }

// Copies the values the cookie marks as strings among `values` (bit i of the mask for values[i],
// bits from `first` to `last`), into the event's two string slots.
static void copy_strings(const struct ring_header *ring0, struct event *e, const uint64_t *values,
                         int first, int last) {
    unsigned strings = (unsigned)(e->cookie >> 32) & 0x7f, n = 0;
    for (int i = first; i <= last && n < 2; i++) {
        if (strings & (1u << i)) {
            e->flags |= copy_string(ring0, e->str[n], values[i - first]) << n;
            n++;
        }
    }
}

// Writes a call's entry event, timed `ts`; 0 when the ring was full.
static int record_entry(struct ring_header *ring0, struct hookit_ctx *ctx, uint64_t ts) {
    uint64_t pos;
    struct event *e = take_slot(ring0, &pos, 1);
    if (!e) return 0;
    e->flags = EV_ENTRY << 16;
    e->cookie = tagged(ctx->cookie);
    e->ts = ts;
    e->sp = ctx->entry_sp;
    for (int i = 0; i < 6; i++) e->args[i] = ctx->args[i];
    copy_strings(ring0, e, ctx->args, 0, 5);
    if (ctx->cookie & HOOKIT_RT_TRACE_STACK) hookit_rt_stack_capture(ctx, e->tid, e->seq);
    publish(ring0, e, pos);
    return 1;
}

// The entry event. scratch[0] keeps its time for the end event; zero when no entry event was
// written (the ring was full), so that no end follows an entry the reader never had: the call
// is counted once, as dropped.
uint64_t hookit_rt_trace_enter(struct hookit_ctx *ctx) {
    struct ring_header *ring0 = hookit_rt_ring;
    ctx->scratch[0] = 0;
    if (!ring0) return 0;
    uint64_t now = rt_ticks();
    if (record_entry(ring0, ctx, now)) ctx->scratch[0] = now | 1;      // never 0, even for a TSC that reads 0
    return 0;
}

uint64_t hookit_rt_trace_exit(struct hookit_ctx *ctx) {
    struct ring_header *ring0 = hookit_rt_ring;
    if (!ring0 || !ctx->scratch[0]) return 0;
    uint64_t pos, now = rt_ticks();
    struct event *e = take_slot(ring0, &pos, 0);
    if (!e) return 0;
    e->flags = EV_END << 16;
    e->cookie = tagged(ctx->cookie);
    e->ts = now;
    e->sp = ctx->entry_sp;
    e->ret = ctx->ret;
    copy_strings(ring0, e, &ctx->ret, 6, 6);
    publish(ring0, e, pos);
    return 0;
}

// --trace --if on `ret` or `ns`: whether a call is traced is known only when it returns, so its
// entry only takes the time (hookit_rt_trace_stamp), and a call that passed its filter gets its
// entry event (its strings copied now) and its end event together here. A call that never
// returns is not traced under such a filter.
uint64_t hookit_rt_trace_stamp(struct hookit_ctx *ctx) {
    ctx->scratch[0] = rt_ticks() | 1;
    return 0;
}

uint64_t hookit_rt_trace_exit_both(struct hookit_ctx *ctx) {
    struct ring_header *ring0 = hookit_rt_ring;
    if (!ring0 || !ctx->scratch[0]) return 0;
    if (!record_entry(ring0, ctx, ctx->scratch[0] & ~1ull)) return 0;
    return hookit_rt_trace_exit(ctx);
}

// A mark in the ring (see marks.c): `kind` is EV_UNWIND (the calls whose entry rsp is below `sp`
// are gone), EV_THREAD_EXIT or EV_EXIT.
void rt_trace_mark(unsigned kind, uint64_t sp, uint64_t now) {
    struct ring_header *ring0 = hookit_rt_ring;
    uint64_t pos;
    if (!ring0) return;
    struct event *e = take_slot(ring0, &pos, 0);
    if (!e) return;
    e->flags = kind << 16;
    e->cookie = tagged(0);
    e->ts = now;
    e->sp = sp;
    publish(ring0, e, pos);
}
