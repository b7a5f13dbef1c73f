// What the runtime's files share. Nothing here may call a libc function: any of them may be
// hooked, and a program runs before or after it (see hookit_rt.c).
#ifndef HOOKIT_RT_INTERNAL_H
#define HOOKIT_RT_INTERNAL_H
#include <stdint.h>
#include "hookit_rt.h"
#include "hookit.h"

static inline uint64_t rt_ticks(void) { return __builtin_ia32_rdtsc(); }

static inline long rt_syscall3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

static inline long rt_syscall6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}

/// This CPU's copy of per-CPU cells whose CPU 0 copy is at `cpu0` (stride HOOKIT_RT_CPU_STRIDE).
__attribute__((visibility("hidden"))) void *hookit_rt_cpu_cells(void *cpu0);

/// The calling thread's id, without a system call when hookit found glibc's tid field.
__attribute__((visibility("hidden"))) uint32_t hookit_rt_tid(void);

/// An errno for hookit_rt_run to leave in the calling thread after the program (fault injection):
/// it restores the thread's errno around every program, so a program cannot set it directly.
extern __thread int hookit_rt_pending_errno __attribute__((visibility("hidden"))) __attribute__((tls_model("initial-exec")));

#endif
