// Reading a C string of this process that may be any bad pointer (a traced argument, a filtered
// one), without ever faulting: trace.c and filter.c share it.
#include "rt_internal.h"

// The end of the stable range holding `p`, or 0.
static uint64_t stable_end(const uint64_t (*stable)[2], uint64_t count, uint64_t p) {
    uint64_t lo = 0, hi = count;
    while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        if (stable[mid][0] <= p) lo = mid + 1; else hi = mid;
    }
    return lo > 0 && p < stable[lo - 1][1] ? stable[lo - 1][1] : 0;
}

// Inside memory that is never unmapped (a string literal, most often) plain loads copy it, up to
// that memory's end; elsewhere the bytes come through process_vm_readv, which cannot fault.
unsigned rt_copy_string(const uint64_t (*stable)[2], uint64_t stable_count, char *dst, uint64_t src, uint64_t size) {
    uint64_t max = size - 1;
    dst[0] = 0;
    if (src == 0) return RT_STRING_NULL;
    if (src < 4096) return RT_STRING_UNREADABLE;
    uint64_t end = stable_end(stable, stable_count, src);
    if (end) {
        const volatile char *s = (const volatile char *)src;
        uint64_t n = end - src < max ? end - src : max;
        for (uint64_t i = 0; i < n; i++) {
            if (!(dst[i] = s[i])) return 0;
        }
        if (n == max) { dst[n] = 0; return 0; }
        // The range ended before the string did: the rest may be anywhere.
    }
    long pid = rt_syscall3(39 /* getpid */, 0, 0, 0);
    // Split at the page boundary: a read stops at the first iovec it cannot complete, so the
    // bytes of a string ending just before an unmapped page still arrive.
    uint64_t first = 4096 - (src & 4095);
    if (first > max) first = max;
    struct { void *base; uint64_t len; } local = { dst, max },
        remote[2] = { { (void *)src, first }, { (void *)(src + first), max - first } };
    long n = rt_syscall6(310 /* process_vm_readv */, pid, (long)&local, 1, (long)remote, first == max ? 1 : 2, 0);
    if (n <= 0) return RT_STRING_UNREADABLE;
    dst[n] = 0;
    return 0;
}
