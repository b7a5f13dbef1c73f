// --trace: one event per call, written into a ring that hookit reads from its own mapping of the
// same memfd. Many threads write at once without a lock; nothing here ever waits for the reader.
#include "rt_internal.h"

// The ring, as hookit lays it out (TraceRing.swift mirrors it): a 4 KiB header, then
// `capacity` slots of HOOKIT_RT_SLOT bytes. The head and the dropped count have cache lines of
// their own: every writer touches them.
struct ring_header {
    uint64_t magic, capacity, slot_size, pad0[5];
    uint64_t head, pad1[7];       // next position to reserve (writers)
    uint64_t dropped, pad2[7];    // events given up because the ring was full
};

#define HOOKIT_RT_SLOT 256
#define STR_BYTES 80

// A slot's `seq` is its turn (Vyukov's bounded queue): a writer may take position p when the
// slot says p; it says p + 1 once the event is complete (the reader's signal); the reader hands
// it back for the next lap with p + capacity. So a slow reader makes writers drop, never wait.
struct event {
    uint64_t seq;
    uint32_t tid, flags;        // 1: no entry time (the enter program did not run); 2 << n: string n
                                // was a null pointer; 8 << n: string n could not be read
    uint64_t cookie;            // function index (low 32 bits) and string mask
    uint64_t ts, dur;           // TSC ticks: entry, and duration
    uint64_t args[6], ret;
    char str[2][STR_BYTES];     // the first two string arguments (or return value), copied
};
_Static_assert(sizeof(struct event) == HOOKIT_RT_SLOT, "slot size");

struct ring_header *volatile hookit_rt_ring = 0;

uint64_t hookit_rt_trace_enter(struct hookit_ctx *ctx) {
    ctx->scratch[0] = rt_ticks();
    return 0;
}

// Copies a C string of this process without ever faulting: a traced argument may be any bad
// pointer, so the bytes come through process_vm_readv. Returns 0, 2 (null) or 8 (unreadable),
// shifted by the caller into the event's flags.
static unsigned copy_string(char *dst, uint64_t src) {
    dst[0] = 0;
    if (src == 0) return 2;
    if (src < 4096) return 8;
    long pid = rt_syscall3(39 /* getpid */, 0, 0, 0);
    // Split at the page boundary: a read stops at the first iovec it cannot complete, so the
    // bytes of a string ending just before an unmapped page still arrive.
    uint64_t first = 4096 - (src & 4095);
    if (first > STR_BYTES - 1) first = STR_BYTES - 1;
    struct { void *base; uint64_t len; } local = { dst, STR_BYTES - 1 },
        remote[2] = { { (void *)src, first }, { (void *)(src + first), STR_BYTES - 1 - first } };
    long n = rt_syscall6(310 /* process_vm_readv */, pid, (long)&local, 1, (long)remote,
                         first == STR_BYTES - 1 ? 1 : 2, 0);
    if (n <= 0) return 8;
    dst[n] = 0;
    return 0;
}

uint64_t hookit_rt_trace_exit(struct hookit_ctx *ctx) {
    struct ring_header *ring = hookit_rt_ring;
    if (!ring) return 0;
    uint64_t end = rt_ticks();
    uint64_t mask = ring->capacity - 1;
    struct event *slots = (struct event *)((char *)ring + 4096);
    uint64_t pos = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    struct event *e;
    for (;;) {
        e = &slots[pos & mask];
        uint64_t seq = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
        int64_t turn = (int64_t)(seq - pos);
        if (turn == 0) {
            if (__atomic_compare_exchange_n(&ring->head, &pos, pos + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
        } else if (turn < 0) {
            __atomic_fetch_add(&ring->dropped, 1, __ATOMIC_RELAXED);    // full: the reader is a lap behind
            return 0;
        } else {
            pos = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
        }
    }
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
            e->flags |= copy_string(e->str[n], i < 6 ? ctx->args[i] : ctx->ret) << n;
            n++;
        }
    }
    __atomic_store_n(&e->seq, pos + 1, __ATOMIC_RELEASE);
    return 0;
}
