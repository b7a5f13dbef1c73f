// Replacement functions for regcheck's leaves (libregreplace.so), for `--replace`. Each is a
// normal C function and, as any C function may, writes junk into every caller-saved register
// that is not its return value: rcx rdx rsi rdi r8-r11 and xmm0-xmm15. A caller of the hooked
// function that kept values there across the call (-fipa-ra) must still find them: that is
// hookit's job, not the replacement's (design.md, invariant 5).
#include "hookit.h"

#define EXPORT __attribute__((visibility("default")))

// Junk in every caller-saved register. The compiler keeps whatever it still needs elsewhere
// (the clobber list), so the code after this runs with junk wherever it did not write.
#define CLOBBER_ALL()                                                                      \
    __asm__ volatile("movabs $0xdead0000000000c1,%%rcx\n\t"                                \
                     "movabs $0xdead0000000000d2,%%rdx\n\t"                                \
                     "movabs $0xdead0000000000e3,%%rsi\n\t"                                \
                     "movabs $0xdead0000000000f4,%%rdi\n\t"                                \
                     "movabs $0xdead000000000008,%%r8\n\t"                                 \
                     "movabs $0xdead000000000009,%%r9\n\t"                                 \
                     "movabs $0xdead000000000010,%%r10\n\t"                                \
                     "movabs $0xdead000000000011,%%r11\n\t"                                \
                     "pcmpeqd %%xmm0,%%xmm0\n\t pcmpeqd %%xmm1,%%xmm1\n\t"                 \
                     "pcmpeqd %%xmm2,%%xmm2\n\t pcmpeqd %%xmm3,%%xmm3\n\t"                 \
                     "pcmpeqd %%xmm4,%%xmm4\n\t pcmpeqd %%xmm5,%%xmm5\n\t"                 \
                     "pcmpeqd %%xmm6,%%xmm6\n\t pcmpeqd %%xmm7,%%xmm7\n\t"                 \
                     "pcmpeqd %%xmm8,%%xmm8\n\t pcmpeqd %%xmm9,%%xmm9\n\t"                 \
                     "pcmpeqd %%xmm10,%%xmm10\n\t pcmpeqd %%xmm11,%%xmm11\n\t"             \
                     "pcmpeqd %%xmm12,%%xmm12\n\t pcmpeqd %%xmm13,%%xmm13\n\t"             \
                     "pcmpeqd %%xmm14,%%xmm14\n\t pcmpeqd %%xmm15,%%xmm15\n\t"             \
                     ::: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11",      \
                     "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",       \
                     "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", \
                     "cc", "memory")

struct pair { long lo, hi; };

// For add_leaf (and regcheck's C add): a + b + 1000.
EXPORT long clobber_add(long a, long b) {
    CLOBBER_ALL();
    return a + b + 1000;
}

// For pair_leaf: {a + b + 1000, a - b + 1000} in rax:rdx.
EXPORT struct pair clobber_pair(long a, long b) {
    CLOBBER_ALL();
    return (struct pair){a + b + 1000, a - b + 1000};
}

// For dbl_leaf: x + y + 1000 in xmm0; xmm1-15 are left as junk (all ones).
EXPORT double clobber_dbl(double x, double y) {
    CLOBBER_ALL();
    return x + y + 1000.0;
}

// For add_leaf, through the original: add_leaf(a, b) + 2000.
HOOKIT_ORIGINAL(add_leaf, long, (long, long));

EXPORT long orig_add(long a, long b) {
    long r = hookit_original_add_leaf ? hookit_original_add_leaf(a, b) + 2000 : -1;
    CLOBBER_ALL();
    return r;
}
