// --count --by KEY: calls per key (bpftrace's @[arg0] = count()), in one open-addressing table in
// shared memory that every thread updates with atomics; hookit reads it in place. A slot's key is
// claimed with one compare-and-swap and never changes after, so nothing here waits on another
// thread (a signal handler that calls the same function cannot deadlock it). Key 0 marks a free
// slot, so calls whose key is 0 have a cell of their own. A call whose key finds no slot within
// PROBES is counted as an overflow, never lost.
#include "rt_internal.h"

// Which value is the key: KeyedCount.Key (BuiltinPrograms+Keys.swift) mirrors it.
enum key { KEY_ARG0 = 0, KEY_RET = 6, KEY_TID = 7, KEY_CALLER = 8 /* KEY_STACK = 9: reserved for --by stack */ };

struct keyed {
    uint64_t key;          // enum key
    uint64_t mask;         // slots - 1 (a power of two)
    uint64_t pad0[6];      // the settings every thread reads, on a line of their own
    uint64_t zero;         // calls whose key was 0
    uint64_t overflow;     // calls whose key found no free slot
    uint64_t pad1[6];
    struct { uint64_t key, count; } slot[];
};

enum { PROBES = 64 };

uint64_t hookit_rt_keyed_count(struct hookit_ctx *ctx) {
    struct keyed *t = (struct keyed *)(uintptr_t)ctx->cookie;
    uint64_t k;
    switch (t->key) {
    case KEY_RET: k = ctx->ret; break;
    case KEY_TID: k = hookit_rt_tid(); break;
    case KEY_CALLER: k = *(const uint64_t *)(uintptr_t)ctx->entry_sp; break;   // the return address
    default: k = t->key < 6 ? ctx->args[t->key] : 0; break;
    }
    if (k == 0) {
        __atomic_fetch_add(&t->zero, 1, __ATOMIC_RELAXED);
        return 0;
    }
    uint64_t mask = t->mask, i = (k * 0x9E3779B97F4A7C15ull) >> 32;
    for (unsigned n = 0; n < PROBES && n <= mask; n++, i++) {
        uint64_t *slot = &t->slot[i & mask].key;
        uint64_t have = __atomic_load_n(slot, __ATOMIC_RELAXED);
        if (have == 0) {
            uint64_t expected = 0;
            if (__atomic_compare_exchange_n(slot, &expected, k, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) have = k;
            else have = expected;                          // another thread took it meanwhile
        }
        if (have == k) {
            __atomic_fetch_add(&t->slot[i & mask].count, 1, __ATOMIC_RELAXED);
            return 0;
        }
    }
    __atomic_fetch_add(&t->overflow, 1, __ATOMIC_RELAXED);
    return 0;
}

// --hist argN: a log2 histogram of an argument's value, in per-CPU cells (the cookie is CPU 0's
// block). Cell 0 of CPU 0's block says which argument; buckets start 16 cells on, off the line
// every thread reads. Bucket 0: the value 0; bucket k: [2^(k-1), 2^k).
uint64_t hookit_rt_value_hist(struct hookit_ctx *ctx) {
    uint64_t *cells = (uint64_t *)(uintptr_t)ctx->cookie;
    uint64_t v = ctx->args[cells[0] < 6 ? cells[0] : 0];
    unsigned bucket = v ? 64 - (unsigned)__builtin_clzll(v) : 0;
    rt_percpu_add(&cells[16 + bucket], 1);
    return 0;
}
