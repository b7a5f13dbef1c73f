// The in-tracee runtime for user programs: what the seed's __bpf_prog_enter/exit do, in C.
// hookit loads libhookit_rt.so into the tracee (dlopen) before any user program runs; images
// call hookit_rt_run for each user program, and hookit's own programs here (timing, trace,
// override: they call no libc function, so need no recursion guard) directly. The built-in
// count program needs none of this.
#ifndef HOOKIT_RT_H
#define HOOKIT_RT_H
#include <stdint.h>

struct hookit_ctx;

/// Per-attachment statistics, like struct bpf_prog_stats plus misses, kept per CPU (as the
/// kernel keeps them): `stats` points at CPU 0's cells; CPU c's are HOOKIT_RT_CPU_STRIDE
/// bytes further. hookit sums the cells of every CPU.
struct hookit_rt_stats {
    uint64_t calls;     // runs of the program
    uint64_t nsecs;     // time inside the program, in TSC ticks (hookit converts), when time collection is on
    uint64_t misses;    // runs skipped because the thread was already inside a program
};

#define HOOKIT_RT_CPU_STRIDE (1 << 24)

/// How many CPUs have cells (set by hookit before the first run).
extern volatile int hookit_rt_cpus;

typedef uint64_t (*hookit_prog_fn)(struct hookit_ctx *ctx);

/// Runs one program for one call, unless this thread is already inside a hookit program (a
/// program that calls, directly or not, a hooked function): then the nested run is skipped,
/// counted as a miss, and 0 returned (for fmod_ret: the original runs).
uint64_t hookit_rt_run(hookit_prog_fn prog, struct hookit_ctx *ctx, struct hookit_rt_stats *stats);

/// Non-zero: time each run (TSC). Off unless hookit asks (--prog-time), as the kernel keeps
/// run_time_ns only under bpf_stats_enabled: two TSC reads cost more than a small program.
extern volatile int hookit_rt_time_enabled;

#endif
