// The rings of the runtime (trace.c's events, stack.c's stack copies), as hookit lays them out
// (TraceRing.swift, StackRing.swift): `rings` rings of `ring_stride` bytes, one per CPU when the
// process has rseq (else one), each a 4 KiB header then `capacity` slots of `slot_size` bytes.
// Many threads write at once without a lock; nothing here ever waits for the reader.
#ifndef HOOKIT_RT_RING_H
#define HOOKIT_RT_RING_H
#include "rt_internal.h"

// Every ring's header starts so (the first ring's settings hold for all); each field a
// writer or the reader moves has a cache line of its own.
struct rt_ring {
    uint64_t magic, capacity, slot_size, rings, ring_stride, pad0[3];
    uint64_t head, pad1[7];         // next position to reserve (writers)
    uint64_t dropped, pad2[7];      // what was given up because the ring was full
    uint64_t dropped_ends;          // the trace's end events and marks given up
    uint64_t tail;                  // what the reader has read up to (the trace's reader writes it)
    uint64_t pad3[6];
};
_Static_assert(__builtin_offsetof(struct rt_ring, head) == 64 && __builtin_offsetof(struct rt_ring, tail) == 200,
               "the reservation's offsets");

// A slot's first word is its `turn` (Vyukov's bounded queue, counted from the slot's index so
// that zeroed memory is a ready ring): for position p of lap L = p & ~mask, a writer may take
// it when turn == L, publishes L + 1 once the slot is complete (the reader's signal), and the
// reader hands it back for the next lap with L + capacity. A slow reader makes writers drop,
// never wait.
//
// Takes the next position of this CPU's ring inside an rseq critical section whose commit is
// the head's store: only threads running on this CPU ever move this head, so no locked
// instruction and no line shared between CPUs. Once committed, the slot is this thread's even if
// it migrates before publishing. NULL: the ring is full (or `limit` or more positions ahead of
// the reader's tail), or the thread has no CPU number; `*ring_out` is the ring to count the
// drop in.
static inline __attribute__((always_inline)) void *rt_ring_reserve_on_this_cpu(struct rt_ring *ring0, uint64_t limit,
                                                                                uint64_t *pos_out, struct rt_ring **ring_out) {
    char *ring, *slot;
    uint64_t pos, tmp, size = ring0->slot_size;
    long rseq = (long)__rseq_offset;
    __asm__ volatile(
        RT_RSEQ_ARM("%[ring]")
        "movl %%fs:4(%[rseq]), %k[ring]\n\t"
        "cmpl %k[rings], %k[ring]\n\t"
        "jae 8f\n\t"
        "imulq %[stride], %[ring]\n\t"
        "addq %[base], %[ring]\n\t"
        "movq 64(%[ring]), %[pos]\n\t"
        "movq %[pos], %[tmp]\n\t"
        "subq 200(%[ring]), %[tmp]\n\t"
        "cmpq %[limit], %[tmp]\n\t"
        "jae 5f\n\t"
        "movq %[pos], %[slot]\n\t"
        "andq %[mask], %[slot]\n\t"
        "imulq %[size], %[slot]\n\t"
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
        : [rseq] "r"(rseq), [rings] "r"(ring0->rings), [stride] "rm"(ring0->ring_stride), [base] "r"(ring0),
          [mask] "r"(ring0->capacity - 1), [limit] "rm"(limit), [size] "rm"(size)
        : "memory", "cc");
    *pos_out = pos;
    *ring_out = (struct rt_ring *)ring;
    return slot;
}

// Without rseq: one ring, its head taken with a compare-and-swap.
static inline void *rt_ring_reserve_shared(struct rt_ring *ring, uint64_t limit, uint64_t *pos_out) {
    uint64_t mask = ring->capacity - 1;
    char *slots = (char *)ring + 4096;
    uint64_t pos = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    for (;;) {
        if (pos - __atomic_load_n(&ring->tail, __ATOMIC_RELAXED) >= limit) return 0;
        uint64_t *turn_word = (uint64_t *)(slots + (pos & mask) * ring->slot_size);
        int64_t turn = (int64_t)(__atomic_load_n(turn_word, __ATOMIC_ACQUIRE) - (pos & ~mask));
        if (turn == 0) {
            if (__atomic_compare_exchange_n(&ring->head, &pos, pos + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                *pos_out = pos;
                return turn_word;
            }
        } else if (turn < 0) {
            return 0;                                  // full: the reader is a lap behind
        } else {
            pos = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
        }
    }
}

#endif
