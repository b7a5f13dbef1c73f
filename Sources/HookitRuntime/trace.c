// --trace: one event per call, written into a ring that hookit reads from its own mapping of the
// same memfd. Many threads write at once without a lock; nothing here ever waits for the reader.
#include "rt_internal.h"

// The rings, as hookit lays them out (TraceRing.swift mirrors it): `rings` rings of
// `ring_stride` bytes each, one per CPU when the process has rseq (else one). Each is a 4 KiB
// header, then `capacity` slots of HOOKIT_RT_SLOT bytes. The first header's settings hold for
// all; each ring has its own head and dropped count, on cache lines of their own.
struct ring_header {
    uint64_t magic, capacity, slot_size, rings, ring_stride, pad0[3];
    uint64_t head, pad1[7];       // next position to reserve (writers)
    uint64_t dropped, pad2[7];    // events given up because the ring was full
    uint64_t pad3[8];
    uint64_t stable_count;        // ring 0: memory that is never unmapped (modules the process
    uint64_t stable[][2];         // cannot unload), sorted [start, end) pairs
};

#define HOOKIT_RT_SLOT 256
#define STR_BYTES 76

// A slot's `turn` says whose it is (Vyukov's bounded queue, counted from the slot's index so
// that zeroed memory is a ready ring): for position p of lap L = p & ~mask, a writer may take
// it when turn == L, publishes L + 1 once the event is complete (the reader's signal), and the
// reader hands it back for the next lap with L + capacity. A slow reader makes writers drop,
// never wait.
struct event {
    uint64_t turn;
    uint32_t tid, flags;        // 1: no entry time (the enter program did not run); 2 << n: string n
                                // was a null pointer; 8 << n: string n could not be read
    uint64_t cookie;            // function index (low 32 bits) and string mask
    uint64_t ts, dur;           // TSC ticks: entry, and duration
    uint64_t args[6], ret;
    uint64_t seq;               // the thread's own event number (see trace_seq)
    char str[2][STR_BYTES];     // the first two string arguments (or return value), copied
};
_Static_assert(sizeof(struct event) == HOOKIT_RT_SLOT, "slot size");

struct ring_header *volatile hookit_rt_ring = 0;

// Each thread numbers its events: a thread that migrates writes its next event into another
// CPU's ring, which the reader may see first; the numbers let it put each thread's events back
// in order. Numbered only once a slot is taken, so a dropped event leaves no gap.
static __thread uint64_t trace_seq __attribute__((tls_model("initial-exec")));

// Takes the next position of this CPU's ring inside an rseq critical section whose commit is
// the head's store: only threads running on this CPU ever move this head, so no locked
// instruction and no line shared between CPUs. Once committed, the slot is this thread's even if
// it migrates before publishing. NULL: the ring is full, or the thread has no CPU number; the
// drop is counted in `*ring_out`.
static struct event *reserve_on_this_cpu(struct ring_header *ring0, uint64_t *pos_out, struct ring_header **ring_out) {
    char *ring;
    uint64_t pos, tmp;
    char *slot;
    long rseq = (long)__rseq_offset;
    __asm__ volatile(
        RT_RSEQ_ARM("%[ring]")
        "movl %%fs:4(%[rseq]), %k[ring]\n\t"
        "cmpl %k[rings], %k[ring]\n\t"
        "jae 8f\n\t"
        "imulq %[stride], %[ring]\n\t"
        "addq %[base], %[ring]\n\t"
        "movq 64(%[ring]), %[pos]\n\t"
        "movq %[pos], %[slot]\n\t"
        "andq %[mask], %[slot]\n\t"
        "shlq $8, %[slot]\n\t"
        "leaq 4096(%[ring], %[slot]), %[slot]\n\t"
        "movq %[mask], %[tmp]\n\t"
        "notq %[tmp]\n\t"
        "andq %[pos], %[tmp]\n\t"
        "cmpq %[tmp], (%[slot])\n\t"
        "jne 5f\n\t"
        "leaq 1(%[pos]), %[tmp]\n\t"
        "movq %[tmp], 64(%[ring])\n"
        "2:\n\t"
        RT_RSEQ_DISARM
        "jmp 7f\n\t"
        RT_RSEQ_ABORT
        "8:\n\t"
        "movq %[base], %[ring]\n"
        "5:\n\t"
        RT_RSEQ_DISARM
        "xorl %k[slot], %k[slot]\n"
        "7:\n"
        : [ring] "=&r"(ring), [pos] "=&r"(pos), [slot] "=&r"(slot), [tmp] "=&r"(tmp)
        : [rseq] "r"(rseq), [rings] "r"(ring0->rings), [stride] "r"(ring0->ring_stride), [base] "r"(ring0),
          [mask] "r"(ring0->capacity - 1)
        : "memory", "cc");
    *pos_out = pos;
    *ring_out = (struct ring_header *)ring;
    return (struct event *)slot;
}

// Without rseq: one ring, its head taken with a compare-and-swap.
static struct event *reserve_shared(struct ring_header *ring, uint64_t *pos_out) {
    uint64_t mask = ring->capacity - 1;
    struct event *slots = (struct event *)((char *)ring + 4096);
    uint64_t pos = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    for (;;) {
        struct event *e = &slots[pos & mask];
        int64_t turn = (int64_t)(__atomic_load_n(&e->turn, __ATOMIC_ACQUIRE) - (pos & ~mask));
        if (turn == 0) {
            if (__atomic_compare_exchange_n(&ring->head, &pos, pos + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                *pos_out = pos;
                return e;
            }
        } else if (turn < 0) {
            return 0;                                  // full: the reader is a lap behind
        } else {
            pos = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
        }
    }
}

uint64_t hookit_rt_trace_enter(struct hookit_ctx *ctx) {
    ctx->scratch[0] = rt_ticks();
    return 0;
}

// A string argument (or return value), copied without ever faulting (safe_string.c). Returns
// 0, 2 (null) or 8 (unreadable), shifted by the caller into the event's flags.
static unsigned copy_string(const struct ring_header *ring0, char *dst, uint64_t src) {
    return rt_copy_string(ring0->stable, ring0->stable_count, dst, src, STR_BYTES);
}

uint64_t hookit_rt_trace_exit(struct hookit_ctx *ctx) {
    struct ring_header *ring0 = hookit_rt_ring, *ring = ring0;
    if (!ring0) return 0;
    uint64_t end = rt_ticks();
    uint64_t pos;
    int percpu = &__rseq_size && __rseq_size >= 8;
    struct event *e = percpu ? reserve_on_this_cpu(ring0, &pos, &ring) : reserve_shared(ring0, &pos);
    if (!e) {
        __atomic_fetch_add(&ring->dropped, 1, __ATOMIC_RELAXED);
        return 0;
    }
    e->seq = ++trace_seq;
    e->tid = hookit_rt_tid();
    e->cookie = ctx->cookie;
    e->ts = ctx->scratch[0];
    e->flags = ctx->scratch[0] ? 0 : 1;
    e->dur = ctx->scratch[0] ? end - ctx->scratch[0] : 0;
    for (int i = 0; i < 6; i++) e->args[i] = ctx->args[i];
    e->ret = ctx->ret;
    // Bits 32-37: arguments that are strings; bit 38: the return value is one.
    unsigned strings = (unsigned)(ctx->cookie >> 32) & 0x7f, n = 0;
    for (int i = 0; i < 7 && n < 2; i++) {
        if (strings & (1u << i)) {
            e->flags |= copy_string(ring0, e->str[n], i < 6 ? ctx->args[i] : ctx->ret) << n;
            n++;
        }
    }
    __atomic_store_n(&e->turn, (pos & ~(ring0->capacity - 1)) + 1, __ATOMIC_RELEASE);
    return 0;
}
