// What the runtime's files share. Nothing here may call a libc function: any of them may be
// hooked, and a program runs before or after it (see hookit_rt.c).
#ifndef HOOKIT_RT_INTERNAL_H
#define HOOKIT_RT_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include "hookit_rt.h"
#include "hookit.h"

// Time stamp counter ticks (constant and non-stop on the CPUs hookit runs on): reading it calls
// no libc function, which may itself be hooked; hookit converts ticks to nanoseconds.
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

// What ends calls without their returning, as marks.c sees it and the trace ring records it.
enum event_kind { EV_ENTRY = 0, EV_END = 1, EV_UNWIND = 2, EV_THREAD_EXIT = 3, EV_EXIT = 4 };

// A mark, for the trace (trace.c) and for timed counts (timing.c): with EV_UNWIND, the calls
// whose entry rsp is below `sp` are gone; with the exits, every call of the thread is.
void rt_trace_mark(unsigned kind, uint64_t sp, uint64_t now);
void rt_time_mark(unsigned kind, uint64_t sp, uint64_t now);

/// Adds `delta` to this CPU's copy of a per-CPU cell whose CPU 0 copy is at `cpu0`: the kernel's
/// this_cpu_add, in user space, as the images do it (PerCPUCounters.swift). The add is the commit
/// of an rseq critical section: a thread preempted, migrated or signalled between reading its CPU
/// number and the add restarts at the abort handler, so each cell is only written by the thread
/// running on its CPU and no locked instruction is needed. The section is disarmed after the
/// commit: its descriptor lives in this library, which detach may unload. Without rseq (or for a
/// thread that never registered one), a locked add on CPU 0's cell.
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

_Static_assert(HOOKIT_RT_CPU_STRIDE == 1 << 24, "the add below shifts the CPU number by 24");

// The asm text every rseq critical section of the runtime shares (local labels: 1 its start, 2
// just past its commit, 4 its abort handler, 6 where it is armed again after an abort, 3 its
// descriptor). The descriptor (struct rseq_cs: version, flags, start_ip, post_commit_offset,
// abort_ip) is in a data section of this library; the 4 bytes before the abort handler are
// glibc's RSEQ_SIG, which the kernel checks before jumping there. `rseq` names the operand
// holding __rseq_offset (struct rseq: cpu_id at +4, rseq_cs at +8).
#define RT_RSEQ_ARM(scratch)                                    \
    ".pushsection .data.rel.ro.hookit_rseq, \"aw\"\n\t"         \
    ".balign 32\n"                                              \
    "3:\n\t"                                                    \
    ".long 0, 0\n\t"                                            \
    ".quad 1f, 2f - 1f, 4f\n\t"                                 \
    ".popsection\n"                                             \
    "6:\n\t"                                                    \
    "leaq 3b(%%rip), " scratch "\n\t"                           \
    "movq " scratch ", %%fs:8(%[rseq])\n"                        \
    "1:\n\t"
#define RT_RSEQ_DISARM "movq $0, %%fs:8(%[rseq])\n\t"
#define RT_RSEQ_ABORT                                           \
    ".byte 0x0f, 0xb9, 0x3d\n\t"                                \
    ".long 0x53053053\n"                                        \
    "4:\n\t"                                                    \
    "jmp 6b\n"

static inline __attribute__((always_inline)) void rt_percpu_add(uint64_t *cpu0, uint64_t delta) {
    unsigned cpus = (unsigned)hookit_rt_cpus;
    if (!&__rseq_size || __rseq_size < 8) {
        __atomic_fetch_add(cpu0, delta, __ATOMIC_RELAXED);
        return;
    }
    long rseq = (long)__rseq_offset;
    __asm__ volatile(
        RT_RSEQ_ARM("%%rax")
        "movl %%fs:4(%[rseq]), %%eax\n\t"
        "cmpl %[cpus], %%eax\n\t"
        "jae 5f\n\t"
        "shlq $24, %%rax\n\t"
        "addq %[delta], (%[cell], %%rax)\n"
        "2:\n\t"
        RT_RSEQ_DISARM
        "jmp 7f\n\t"
        RT_RSEQ_ABORT
        "5:\n\t"
        RT_RSEQ_DISARM
        "lock addq %[delta], (%[cell])\n"
        "7:\n"
        :
        : [rseq] "r"(rseq), [cpus] "r"(cpus), [cell] "r"(cpu0), [delta] "r"(delta)
        : "rax", "memory", "cc");
}

/// The calling thread's id, without a system call when hookit found glibc's tid field.
__attribute__((visibility("hidden"))) uint32_t hookit_rt_tid(void);

/// The calling thread's errno, found without a libc call after the first time (see hookit_rt.c);
/// NULL when that first lookup would run inside a program (a hooked __errno_location).
__attribute__((visibility("hidden"))) int *hookit_rt_errno_location(void);

/// Copies the C string at `src` into `dst` (`size` bytes, NUL included; a longer string is cut)
/// without ever faulting, whatever `src` is (see safe_string.c). `stable`: `stable_count` sorted
/// [start, end) ranges of memory that is never unmapped, read with plain loads. Returns 0,
/// RT_STRING_NULL or RT_STRING_UNREADABLE (then `dst` is empty).
enum { RT_STRING_NULL = 2, RT_STRING_UNREADABLE = 8 };
__attribute__((visibility("hidden")))
unsigned rt_copy_string(const uint64_t (*stable)[2], uint64_t stable_count, char *dst, uint64_t src, uint64_t size);

/// --stack: a trace link whose cookie has this bit records the call's stack too (stack.c), for
/// the event (tid, seq).
#define HOOKIT_RT_TRACE_STACK (1ull << 39)
__attribute__((visibility("hidden"))) void hookit_rt_stack_capture(const struct hookit_ctx *ctx, uint32_t tid, uint64_t seq);

#endif
