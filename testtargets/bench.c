// The benchmark target. Commands on stdin, one answer line each (as target.c):
//   run N T   T threads each call bench_fn N times through a volatile pointer, timed inside the
//             process; answers "ns_per_call TOTAL_CALLS CHECKSUM" (wall time of the slowest
//             thread divided by N: the per-call cost as each thread sees it).
//   use K     what `run` calls: 0 bench_fn and 1 bench_fn_patchable through the pointer, 2
//             bench_fn_direct by a direct call from this file (gcc -O2's -fipa-ra lets that
//             loop keep values in caller-saved registers across the call, as real callers do);
//             3 limit_entry and 4 limit_exit through the pointer (the limit rows, below); 5
//             bench_fn6 (six integer arguments) and 6 bench_fn_str (one string) through a
//             pointer of their own type. Answers "using NAME".
//             After a run of 3 or 4, every thread checks that its counter saw every call and
//             the sum is bench_fn's; if not, the answer is "FAIL ..." instead of the figures.
//   many A B  calls many_A .. many_(B-1) once each; answers the sum of their results.
//   idle T    starts T threads that sleep (for attach-time rows with many threads); "idle T".
//   probe start  starts the pause probe: a thread that loops forever reading CLOCK_MONOTONIC
//             (clock_gettime, the vDSO: no syscall) and keeps the longest gap between two of its
//             iterations. It calls nothing else (nothing a bench hooks), so what it sees is the
//             time the process was kept from running (ptrace stops), not the cost of a hook. It
//             spins: it keeps one core busy. It asks for nice -20 (as hookit does for itself), so
//             that other work on the machine preempts it less. "probe started nice N" (N: the
//             nice value it got; also answered when already running).
//   probe read   "GAP_NS ITERATIONS": the longest gap since the last read (or start) and the
//             iterations in that time, then resets both. It first waits for two new iterations,
//             so a gap that ended before the read is counted in this read, not the next one.
//   quit
// bench_fn, bench_fn6 and bench_fn_str are ordinary functions (relocated entries);
// bench_fn_patchable has a patchable entry.
// many.c (generated) adds many_0 .. many_9999 for attach-time rows.
#define _GNU_SOURCE
#include <pthread.h>
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline, noipa, used)) long bench_fn(long x) { return x * 3 + 1; }

__attribute__((noinline, noipa, used, patchable_function_entry(5, 0))) long bench_fn_patchable(long x) { return x * 3 + 1; }

// No noipa: the direct-call loop below sees its body, so -fipa-ra applies to it.
__attribute__((noinline, used)) long bench_fn_direct(long x) { return x * 3 + 1; }

// For the --trace rows: every argument register carries a value, and a string to copy.
__attribute__((noinline, noipa, used)) long bench_fn6(long a, long b, long c, long d, long e, long f) {
    return a + b + c + d + e + f;
}

__attribute__((noinline, noipa, used)) long bench_fn_str(const char *s) { return s[0] + 1; }

// The limit rows: what a trampoline costs at least, written by hand so nothing but the counter
// and the control transfer is paid. limit_entry is an fentry-style entry (count, jump on);
// limit_exit an fexit-style wrapper (call the function, count after it returns, return its
// value). Each counts in a thread-local counter of its own: initial-exec TLS has a fixed offset
// from %fs once the program is loaded, so the increment is one instruction on an immediate
// offset, as an image builder that knew the offset could emit; no register is touched (a hookit
// image may not clobber any, invariant 5). limit_exit keeps the stack 16-byte aligned for
// bench_fn (8 bytes of return address + 8 reserved) and has CFI so perf and unwinders see
// through it.
__attribute__((tls_model("initial-exec"), used)) __thread long limit_entry_calls;
__attribute__((tls_model("initial-exec"), used)) __thread long limit_exit_calls;
__attribute__((tls_model("initial-exec"), used)) __thread long limit_timed_calls, limit_timed_ticks;
long limit_entry(long x);
long limit_exit(long x);
long limit_timed(long x);
__asm__(
    ".text\n"
    ".globl limit_entry\n"
    ".type limit_entry, @function\n"
    ".p2align 4\n"
    "limit_entry:\n"
    "    .cfi_startproc\n"
    "    incq %fs:limit_entry_calls@tpoff\n"
    "    jmp bench_fn\n"
    "    .cfi_endproc\n"
    ".size limit_entry, .-limit_entry\n"
    ".globl limit_exit\n"
    ".type limit_exit, @function\n"
    ".p2align 4\n"
    "limit_exit:\n"
    "    .cfi_startproc\n"
    "    subq $8, %rsp\n"
    "    .cfi_adjust_cfa_offset 8\n"
    "    call bench_fn\n"
    "    incq %fs:limit_exit_calls@tpoff\n"
    "    addq $8, %rsp\n"
    "    .cfi_adjust_cfa_offset -8\n"
    "    ret\n"
    "    .cfi_endproc\n"
    ".size limit_exit, .-limit_exit\n"
    // limit_timed: the exit wrapper that also reads the TSC before and after the call and adds
    // the difference to a thread-local total: the floor of anything that times each call
    // (--count, --trace). rdtsc writes rax and rdx; rdx (an argument register) is kept for the
    // call, and both are return registers of no use to bench_fn's callers afterwards.
    ".globl limit_timed\n"
    ".type limit_timed, @function\n"
    ".p2align 4\n"
    "limit_timed:\n"
    "    .cfi_startproc\n"
    "    subq $24, %rsp\n"
    "    .cfi_adjust_cfa_offset 24\n"
    "    movq %rdx, (%rsp)\n"
    "    rdtsc\n"
    "    shlq $32, %rdx\n"
    "    orq %rdx, %rax\n"
    "    movq %rax, 8(%rsp)\n"
    "    movq (%rsp), %rdx\n"
    "    call bench_fn\n"
    "    movq %rax, (%rsp)\n"
    "    rdtsc\n"
    "    shlq $32, %rdx\n"
    "    orq %rdx, %rax\n"
    "    subq 8(%rsp), %rax\n"
    "    addq %rax, %fs:limit_timed_ticks@tpoff\n"
    "    incq %fs:limit_timed_calls@tpoff\n"
    "    movq (%rsp), %rax\n"
    "    addq $24, %rsp\n"
    "    .cfi_adjust_cfa_offset -24\n"
    "    ret\n"
    "    .cfi_endproc\n"
    ".size limit_timed, .-limit_timed\n");

enum use { USE_FN, USE_PATCHABLE, USE_DIRECT, USE_LIMIT_ENTRY, USE_LIMIT_EXIT, USE_FN6, USE_STR, USE_LIMIT_TIMED, USE_COUNT };
static const char *const use_names[USE_COUNT] = {
    "bench_fn", "bench_fn_patchable", "bench_fn_direct", "limit_entry", "limit_exit", "bench_fn6", "bench_fn_str", "limit_timed",
};
static long (*const use_fns[USE_COUNT])(long) = {
    bench_fn, bench_fn_patchable, bench_fn_direct, limit_entry, limit_exit, bench_fn, bench_fn, limit_timed,
};

static long (*volatile fn_ptr)(long) = bench_fn;
static long (*volatile fn6_ptr)(long, long, long, long, long, long) = bench_fn6;
static long (*volatile str_ptr)(const char *) = bench_fn_str;
// 22 bytes, a short path: what --trace copies for a str argument.
static const char *volatile bench_str = "/etc/hookit/bench.conf";
static volatile int using;

// counted: what the thread's limit counter saw (-1 when the loop has none).
struct worker { long n; long ns; long sum; long counted; pthread_t t; };

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *work(void *arg) {
    struct worker *w = arg;
    long sum = 0;
    long (*f)(long) = fn_ptr;
    long (*f6)(long, long, long, long, long, long) = fn6_ptr;
    long (*fs)(const char *) = str_ptr;
    const char *s = bench_str;
    int u = using;
    long t0 = now_ns();
    if (u == USE_DIRECT) for (long i = 0; i < w->n; i++) sum += bench_fn_direct(i);
    else if (u == USE_FN6) for (long i = 0; i < w->n; i++) sum += f6(i, i + 1, i + 2, i + 3, i + 4, i + 5);
    else if (u == USE_STR) for (long i = 0; i < w->n; i++) sum += fs(s);
    else for (long i = 0; i < w->n; i++) sum += f(i);
    w->ns = now_ns() - t0;
    w->sum = sum;
    // Threads are new for every run, so their counters start at 0.
    w->counted = u == USE_LIMIT_ENTRY ? limit_entry_calls : u == USE_LIMIT_EXIT ? limit_exit_calls
               : u == USE_LIMIT_TIMED ? (limit_timed_ticks > 0 ? limit_timed_calls : -2) : -1;
    return NULL;
}

static void *sleeper(void *arg) { (void)arg; for (;;) pause(); return NULL; }

// The pause probe (see the header). Only the probe writes probe_iters and raises probe_worst; the
// main thread resets probe_worst with an exchange.
static _Atomic long probe_worst;
static _Atomic long probe_iters;
static int probe_running;

static int probe_nice;

static void *probe(void *arg) {
    (void)arg;
    // As hookit raises its own priority (nice -20), the probe asks for the same, so that other
    // work on the machine preempts it less; a ptrace stop stops it whatever its priority.
    setpriority(PRIO_PROCESS, (id_t)gettid(), -20);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    probe_nice = errno ? 0 : nice;
    long prev = now_ns(), n = 0;
    for (;;) {
        long t = now_ns();
        long gap = t - prev;
        prev = t;
        long cur = atomic_load_explicit(&probe_worst, memory_order_relaxed);
        while (gap > cur && !atomic_compare_exchange_weak_explicit(&probe_worst, &cur, gap, memory_order_relaxed,
                                                                    memory_order_relaxed)) {}
        atomic_store_explicit(&probe_iters, ++n, memory_order_release);
    }
    return NULL;
}

static void probe_wait(long iterations) {
    long s = atomic_load_explicit(&probe_iters, memory_order_acquire);
    while (atomic_load_explicit(&probe_iters, memory_order_acquire) < s + iterations) sched_yield();
}

extern long (*const many_table[10000])(long);

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", getpid());
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = {0};
        long a = 0, b = 0;
        if (sscanf(line, "%31s %ld %ld", cmd, &a, &b) < 1) continue;
        if (!strcmp(cmd, "run")) {
            long threads = b > 0 ? b : 1;
            struct worker *w = calloc((size_t)threads, sizeof *w);
            for (long i = 0; i < threads; i++) { w[i].n = a; pthread_create(&w[i].t, NULL, work, &w[i]); }
            long worst = 0, sum = 0, miscounted = -1;
            for (long i = 0; i < threads; i++) {
                pthread_join(w[i].t, NULL);
                if (w[i].ns > worst) worst = w[i].ns;
                sum += w[i].sum;
                if (w[i].counted != -1 && w[i].counted != a) miscounted = i;
            }
            // The limit rows must not measure a stub that skipped its work: bench_fn's results
            // sum to 3 * (0 + .. + a-1) + a per thread.
            int limit = using == USE_LIMIT_ENTRY || using == USE_LIMIT_EXIT || using == USE_LIMIT_TIMED;
            long want = threads * (3 * (a * (a - 1) / 2) + a);
            if (miscounted >= 0)
                printf("FAIL %s: thread %ld counted %ld of %ld calls\n", use_names[using], miscounted, w[miscounted].counted, a);
            else if (limit && sum != want)
                printf("FAIL %s: results sum to %ld, bench_fn's to %ld\n", use_names[using], sum, want);
            else
                printf("%.3f %ld %ld\n", (double)worst / (double)a, a * threads, sum);
            free(w);
        } else if (!strcmp(cmd, "use")) {
            if (a >= 0 && a < USE_COUNT) {
                using = (int)a;
                fn_ptr = use_fns[a];
                printf("using %s\n", use_names[a]);
            } else {
                printf("unknown use %ld\n", a);
            }
        } else if (!strcmp(cmd, "many")) {
            long sum = 0;
            for (long i = a; i < b && i < 10000; i++) sum += many_table[i](1);
            printf("%ld\n", sum);
        } else if (!strcmp(cmd, "idle")) {
            for (long i = 0; i < a; i++) { pthread_t t; pthread_create(&t, NULL, sleeper, NULL); }
            printf("idle %ld\n", a);
        } else if (!strcmp(cmd, "probe")) {
            char sub[16] = {0};
            sscanf(line, "%*s %15s", sub);
            if (!strcmp(sub, "start")) {
                if (!probe_running) {
                    pthread_t t;
                    pthread_create(&t, NULL, probe, NULL);
                    probe_running = 1;
                    probe_wait(1);
                }
                printf("probe started nice %d\n", probe_nice);
            } else if (!strcmp(sub, "read") && probe_running) {
                static long last_iters;
                probe_wait(2);
                long worst = atomic_exchange_explicit(&probe_worst, 0, memory_order_acq_rel);
                long iters = atomic_load_explicit(&probe_iters, memory_order_acquire);
                printf("%ld %ld\n", worst, iters - last_iters);
                last_iters = iters;
            } else {
                printf("unknown probe %s%s\n", sub, !strcmp(sub, "read") ? " (not started)" : "");
            }
        } else if (!strcmp(cmd, "quit")) {
            printf("bye\n");
            return 0;
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
