// --stack, --by stack: the user stack at a call, copied into shared memory for hookit to unwind,
// as perf's --call-graph dwarf copies it. Nothing is unwound here: a copy costs a few hundred
// bytes' worth of cycles, an unwind tens of microseconds.
#include "rt_ring.h"

// The rings (rt_ring.h; StackRing.swift mirrors them): records of HOOKIT_RT_STACK_SLOT bytes.

#define HOOKIT_RT_STACK_SLOT 4096
#define STACK_HEADER 64
#define STACK_BYTES (HOOKIT_RT_STACK_SLOT - STACK_HEADER)
#define PAGE 4096ul

// `turn` works as in the trace ring (Vyukov's bounded queue, see trace.c). The bytes are a copy
// of [base, base + len): base is ctx->entry_sp - 8, so the first word is what the trampoline
// pushed there (the caller's rbp, which hookit needs as the frame's rbp), the second the return
// address.
struct stack_record {
    uint64_t turn;
    uint32_t tid, flags;        // flags 1: the copy stops short of STACK_BYTES (the stack's top)
    uint64_t seq;               // the trace event's seq (0 for --by stack samples)
    uint64_t cookie;            // the trace link's cookie, or the sample link's (function index)
    uint64_t ip;                // the hooked function's address: the innermost frame's pc
    uint64_t base, len, pad;
    unsigned char bytes[STACK_BYTES];
};
_Static_assert(sizeof(struct stack_record) == HOOKIT_RT_STACK_SLOT, "slot size");

struct rt_ring *volatile hookit_rt_stack_ring = 0;

// The main thread's stack top (ld.so's, the sp at process start): the stack above a main-thread
// sp is mapped up to there.
extern void *__libc_stack_end __attribute__((weak));

// Per thread: [checked_lo, checked_hi) is stack known to be mapped, so copies inside it are plain
// loads. A glibc thread's stack lies just below its thread pointer (struct pthread sits at the top
// of the stack block) and the main thread's below __libc_stack_end; the range is grown down a few
// pages at a time, each page probed once with process_vm_readv (which cannot fault). A guard page
// or a hole stops it, so a copy never reaches beyond the stack a thread runs on; an sp outside
// (a sigaltstack, a coroutine's stack) is copied with process_vm_readv each time.
static __thread uint64_t checked_lo __attribute__((tls_model("initial-exec")));
static __thread uint64_t checked_hi __attribute__((tls_model("initial-exec")));

#define PROBE_PAGES 64

// Whether every page of [lo, hi) can be read (hi page-aligned or a stack top), probed with one
// process_vm_readv of a byte per page.
// noinline: its probe array would otherwise be reserved on the stack of every capture.
static __attribute__((noinline)) int pages_readable(uint64_t lo, uint64_t hi) {
    struct iov { uint64_t base, len; } remote[PROBE_PAGES], local;
    char sink[PROBE_PAGES];
    unsigned n = 0;
    for (uint64_t p = lo & ~(PAGE - 1); p < hi && n < PROBE_PAGES; p += PAGE) remote[n++] = (struct iov){ p, 1 };
    local = (struct iov){ (uint64_t)sink, n };
    long pid = rt_syscall3(39 /* getpid */, 0, 0, 0);
    return rt_syscall6(310 /* process_vm_readv */, pid, (long)&local, 1, (long)remote, n, 0) == (long)n;
}

// 0 not known yet, 1 the process's main thread, 2 another (a thread's own, like its TLS).
static __thread int main_thread __attribute__((tls_model("initial-exec")));

// The top of the stack `sp` is on, if it is a glibc thread's or the main thread's; else 0. A
// glibc thread's stack is the memory below its thread pointer (its TLS and struct pthread sit
// at the top of its stack mapping); the main thread's is below __libc_stack_end, and what lies
// below its thread pointer is anything (its TLS is in the mmap area).
static uint64_t stack_top(uint64_t sp) {
    if (!main_thread) main_thread = hookit_rt_tid() == (uint32_t)rt_syscall3(39 /* getpid */, 0, 0, 0) ? 1 : 2;
    if (main_thread == 2) {
        uint64_t tp = (uint64_t)__builtin_thread_pointer();
        return sp < tp ? tp : 0;
    }
    uint64_t end = &__libc_stack_end ? (uint64_t)__libc_stack_end : 0;
    return sp < end ? end : 0;
}

// Whether [sp, top) may be read with plain loads, growing the checked range when it is close.
static int stack_checked(uint64_t sp, uint64_t top) {
    if (checked_hi != top) { checked_hi = top; checked_lo = top; }
    if (sp >= checked_lo) return 1;
    uint64_t lo = sp & ~(PAGE - 1);
    if (checked_lo - lo > (PROBE_PAGES - 1) * PAGE || !pages_readable(lo, checked_lo)) return 0;
    checked_lo = lo;
    return 1;
}

// Copies [src, src + n) where it may be unmapped: a read stops at the first page it cannot
// complete. Returns the bytes copied.
static uint64_t copy_checked(unsigned char *dst, uint64_t src, uint64_t n) {
    struct iov { uint64_t base, len; } local = { (uint64_t)dst, n }, remote[2];
    uint64_t first = PAGE - (src & (PAGE - 1));
    if (first > n) first = n;
    remote[0] = (struct iov){ src, first };
    remote[1] = (struct iov){ src + first, n - first };
    long pid = rt_syscall3(39 /* getpid */, 0, 0, 0);
    long got = rt_syscall6(310 /* process_vm_readv */, pid, (long)&local, 1, (long)remote, n > first ? 2 : 1, 0);
    return got > 0 ? (uint64_t)got : 0;
}

// One record of the stack at ctx's call, for the event (tid, seq). Plain loads where the stack
// is known mapped (rep movsb: the runtime has no vector registers, and libc's memcpy may be
// hooked), process_vm_readv elsewhere.
__attribute__((visibility("hidden")))
void hookit_rt_stack_capture(const struct hookit_ctx *ctx, uint32_t tid, uint64_t seq) {
    struct rt_ring *ring0 = hookit_rt_stack_ring, *ring = ring0;
    if (!ring0) return;
    uint64_t pos;
    int percpu = &__rseq_size && __rseq_size >= 8;
    struct stack_record *r = percpu ? rt_ring_reserve_on_this_cpu(ring0, ~0ull, &pos, &ring)
                                    : rt_ring_reserve_shared(ring0, ~0ull, &pos);
    if (!r) {
        __atomic_fetch_add(&ring->dropped, 1, __ATOMIC_RELAXED);
        return;
    }
    uint64_t base = ctx->entry_sp - 8, top = stack_top(base), n = STACK_BYTES;
    if (top && top - base < n) n = top - base;
    r->tid = tid;
    r->seq = seq;
    r->cookie = ctx->cookie;
    r->ip = ctx->func_ip;
    r->base = base;
    r->flags = n < STACK_BYTES;
    if (top && stack_checked(base, top)) {
        void *dst = r->bytes;
        const void *src = (const void *)base;
        uint64_t count = n;
        __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(count) : : "memory");
        r->len = n;
    } else {
        r->len = copy_checked(r->bytes, base, n);
    }
    __atomic_store_n(&r->turn, (pos & ~(ring0->capacity - 1)) + 1, __ATOMIC_RELEASE);
}

// --count PATTERN --by stack: an fentry program that records the stack of every call; the
// cookie is the function's index.
uint64_t hookit_rt_stack_sample(struct hookit_ctx *ctx) {
    hookit_rt_stack_capture(ctx, hookit_rt_tid(), 0);
    return 0;
}
