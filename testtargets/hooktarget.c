// hooktarget: the process the hook tests attach fentry/fexit/fmod_ret/replace hooks to.
// Same protocol as target.c: prints "ready PID", then reads one command per line on stdin
// and answers exactly one line on stdout (line-buffered). Unknown commands answer
// "unknown CMD". Every hookable function is global, exported (-rdynamic), noinline and
// noipa (so gcc neither clones it nor assumes anything about its result) and reachable
// from a command. See HOOKTARGETS.md for the list.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/wait.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOOKABLE __attribute__((noinline, noipa, used))

// ---------------------------------------------------------------------------------------
// Plain C functions.

atomic_long add_calls;  // exported: how many times add ran

HOOKABLE long add(long a, long b) {
    atomic_fetch_add(&add_calls, 1);
    return a + b;
}

// For fault injection: succeeds (returns 2·x, errno untouched) unless hookit overrides it.
HOOKABLE long fallible(long x) {
    return 2 * x;
}

// For string traces: the length of its argument.
HOOKABLE long greet(const char *name) {
    return (long)strlen(name);
}

// Eight integer arguments: the 7th and 8th are on the stack.
HOOKABLE long sum8(long a1, long a2, long a3, long a4, long a5, long a6, long a7, long a8) {
    return a1 + 2 * a2 + 3 * a3 + 4 * a4 + 5 * a5 + 6 * a6 + 7 * a7 + 8 * a8;
}

// A tail call that hands its own stack arguments on: what sum8 reads counts for it too.
HOOKABLE long sum8_tail(long a1, long a2, long a3, long a4, long a5, long a6, long a7, long a8) {
    return sum8(a1, a2, a3, a4, a5, a6, a7, a8);
}

// Variadic: the caller sets al; with n = 12 seven values travel on the stack.
HOOKABLE long vsum(int n, ...) {
    va_list ap;
    va_start(ap, n);
    long s = 0;
    for (int i = 0; i < n; i++) s += va_arg(ap, long);
    va_end(ap);
    return s;
}

// A 40-byte struct: passed by value in memory (on the stack), returned through the hidden
// pointer in rdi.
struct big { long v[5]; };

HOOKABLE long big_by_value(struct big b) {
    return b.v[0] + 2 * b.v[1] + 3 * b.v[2] + 4 * b.v[3] + 5 * b.v[4];
}

HOOKABLE struct big big_make(long seed) {
    struct big b;
    for (int i = 0; i < 5; i++) b.v[i] = seed + i;
    return b;
}

// Floating point arguments and results (xmm registers).
HOOKABLE double fmuladd(double a, double b, double c) { return a * b + c; }

HOOKABLE float fhalf(float x) { return x / 2.0f; }

HOOKABLE double fargs8(double a, double b, double c, double d, double e, double f, double g,
                       double h) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}

// Plain recursion. The recursive calls go through a volatile pointer so gcc cannot turn
// one of them into a loop: every level enters fib through its first byte.
HOOKABLE long fib(long n);
static long (*volatile fib_self)(long) = fib;
HOOKABLE long fib(long n) {
    if (n < 2) return n;
    return fib_self(n - 1) + fib_self(n - 2);
}

// Never returns: longjmps to the buffer the command handler set.
static jmp_buf escape_buf;
HOOKABLE long escape(long x) {
    longjmp(escape_buf, 1);
    return x;  // not reached
}

// Frame pointers are on: rbp = entry rsp - 8, and the ABI wants entry rsp = 8 (mod 16).
HOOKABLE long align_check(long x) {
    long fp = (long)__builtin_frame_address(0);
    volatile long keep = x;
    (void)keep;
    return fp % 16 == 0 ? 1 : 0;
}

// Five one-byte nops at the entry (patchable_function_entry).
__attribute__((noinline, noipa, used, patchable_function_entry(5, 0))) long patch5(long x) {
    return x * 3;
}

// Defined in mcount.c, built with -pg -mfentry -mnop-mcount: entry is nopl 0x0(%rax,%rax,1).
long nopped(long x);

long rip_global = 1000;  // read RIP-relatively by rip_first

// ---------------------------------------------------------------------------------------
// Functions written in assembly, so their bytes are exactly these.

int add4(int a, int b);             // 8d 04 37 c3: 4 bytes, shorter than the 5-byte jmp
int add4_next(int a);               // follows add4 with no padding in between
long rip_first(long x);             // x + rip_global; first instruction is RIP-relative
long jcc_first(long x);             // 1 if x != 0 else 2; a short jz inside the first 5 bytes
long call_first(long x);            // x + 7; first instruction is a call
long helper_one(void);              // 7
long loop_back(long x);             // 2 * max(x, 1); loop branches back to offset 2
long endbr_add(long a, long b);     // endbr64 then a + b
struct regres { long mask, ret; };
struct regres regcheck_call(void);  // see below
uint64_t regcheck_saved_rsp;

__asm__(
    ".text\n"

    // add4 / add4_next: no alignment between them, so the byte after add4's ret is code.
    ".p2align 4\n"
    ".globl add4\n"
    ".type add4,@function\n"
    "add4:\n"
    "    lea (%rdi,%rsi),%eax\n"
    "    ret\n"
    ".size add4,.-add4\n"
    ".globl add4_next\n"
    ".type add4_next,@function\n"
    "add4_next:\n"
    "    lea 1(%rdi),%eax\n"
    "    ret\n"
    ".size add4_next,.-add4_next\n"

    // rip_first: mov rip_global(%rip),%rax is the first instruction (48 8b 05 rel32).
    ".p2align 4\n"
    ".globl rip_first\n"
    ".type rip_first,@function\n"
    "rip_first:\n"
    "    mov rip_global(%rip),%rax\n"
    "    add %rdi,%rax\n"
    "    ret\n"
    ".size rip_first,.-rip_first\n"

    // jcc_first: test (3 bytes) + jz rel8 (2 bytes) fill exactly the first 5 bytes.
    ".p2align 4\n"
    ".globl jcc_first\n"
    ".type jcc_first,@function\n"
    "jcc_first:\n"
    "    test %rdi,%rdi\n"
    "    jz 1f\n"
    "    mov $1,%eax\n"
    "    ret\n"
    "1:  mov $2,%eax\n"
    "    ret\n"
    ".size jcc_first,.-jcc_first\n"

    // helper_one / call_first: a 5-byte call rel32 is the first instruction.
    ".p2align 4\n"
    ".globl helper_one\n"
    ".type helper_one,@function\n"
    "helper_one:\n"
    "    mov $7,%eax\n"
    "    ret\n"
    ".size helper_one,.-helper_one\n"
    ".p2align 4\n"
    ".globl call_first\n"
    ".type call_first,@function\n"
    "call_first:\n"
    "    call helper_one\n"
    "    add %rdi,%rax\n"
    "    ret\n"
    ".size call_first,.-call_first\n"

    // loop_back: the jg at the end targets offset 2, inside the 5 bytes a patch displaces.
    ".p2align 4\n"
    ".globl loop_back\n"
    ".type loop_back,@function\n"
    "loop_back:\n"
    "    xor %eax,%eax\n"          // offset 0, 2 bytes
    "1:  add $2,%rax\n"            // offset 2, 4 bytes: the branch target
    "    sub $1,%rdi\n"            // offset 6
    "    jg 1b\n"                  // offset 10
    "    ret\n"                    // offset 12
    ".size loop_back,.-loop_back\n"

    // endbr_add: endbr64 (4 bytes) then 7 more bytes.
    ".p2align 4\n"
    ".globl endbr_add\n"
    ".type endbr_add,@function\n"
    "endbr_add:\n"
    "    endbr64\n"
    "    lea (%rdi,%rsi,1),%rax\n"
    "    xor %edx,%edx\n"
    "    ret\n"
    ".size endbr_add,.-endbr_add\n"

    // regcheck_call: puts magic values in every callee-saved register (rbx rbp r12-r15),
    // clears DF, calls add(3, 4) directly, then checks the registers, rsp, DF, MXCSR and the
    // x87 control word. Returns {mask, add's result} in rax:rdx. Mask bits: 0 rbx, 1 rbp,
    // 2 r12, 3 r13, 4 r14, 5 r15, 6 rsp, 7 DF set, 8 MXCSR, 9 x87 control word.
    ".p2align 4\n"
    ".globl regcheck_call\n"
    ".type regcheck_call,@function\n"
    "regcheck_call:\n"
    "    push %rbp\n"
    "    push %rbx\n"
    "    push %r12\n"
    "    push %r13\n"
    "    push %r14\n"
    "    push %r15\n"
    "    sub $24,%rsp\n"                       // rsp is now 16-byte aligned
    "    stmxcsr 0(%rsp)\n"
    "    fnstcw 4(%rsp)\n"
    "    mov %rsp,regcheck_saved_rsp(%rip)\n"
    "    movabs $0x1111111111111111,%rbx\n"
    "    movabs $0x2222222222222222,%rbp\n"
    "    movabs $0x3333333333333333,%r12\n"
    "    movabs $0x4444444444444444,%r13\n"
    "    movabs $0x5555555555555555,%r14\n"
    "    movabs $0x6666666666666666,%r15\n"
    "    cld\n"
    "    mov $3,%edi\n"
    "    mov $4,%esi\n"
    "    call add\n"
    "    mov %rax,%rdx\n"                      // add's result, returned in rdx
    "    xor %ecx,%ecx\n"                      // the mask
    "    movabs $0x1111111111111111,%rax\n"
    "    cmp %rax,%rbx\n"
    "    je 1f\n"
    "    or $0x1,%ecx\n"
    "1:  movabs $0x2222222222222222,%rax\n"
    "    cmp %rax,%rbp\n"
    "    je 1f\n"
    "    or $0x2,%ecx\n"
    "1:  movabs $0x3333333333333333,%rax\n"
    "    cmp %rax,%r12\n"
    "    je 1f\n"
    "    or $0x4,%ecx\n"
    "1:  movabs $0x4444444444444444,%rax\n"
    "    cmp %rax,%r13\n"
    "    je 1f\n"
    "    or $0x8,%ecx\n"
    "1:  movabs $0x5555555555555555,%rax\n"
    "    cmp %rax,%r14\n"
    "    je 1f\n"
    "    or $0x10,%ecx\n"
    "1:  movabs $0x6666666666666666,%rax\n"
    "    cmp %rax,%r15\n"
    "    je 1f\n"
    "    or $0x20,%ecx\n"
    "1:  cmp regcheck_saved_rsp(%rip),%rsp\n"
    "    je 1f\n"
    "    or $0x40,%ecx\n"
    "    mov regcheck_saved_rsp(%rip),%rsp\n"  // put it back so the epilogue still works
    "1:  pushf\n"
    "    pop %rax\n"
    "    test $0x400,%eax\n"
    "    jz 1f\n"
    "    or $0x80,%ecx\n"
    "    cld\n"
    "1:  stmxcsr 8(%rsp)\n"
    "    mov 8(%rsp),%eax\n"
    "    cmp 0(%rsp),%eax\n"
    "    je 1f\n"
    "    or $0x100,%ecx\n"
    "    ldmxcsr 0(%rsp)\n"
    "1:  fnstcw 12(%rsp)\n"
    "    movzwl 12(%rsp),%eax\n"
    "    movzwl 4(%rsp),%esi\n"
    "    cmp %esi,%eax\n"
    "    je 1f\n"
    "    or $0x200,%ecx\n"
    "    fldcw 4(%rsp)\n"
    "1:  mov %ecx,%eax\n"
    "    add $24,%rsp\n"
    "    pop %r15\n"
    "    pop %r14\n"
    "    pop %r13\n"
    "    pop %r12\n"
    "    pop %rbx\n"
    "    pop %rbp\n"
    "    ret\n"
    ".size regcheck_call,.-regcheck_call\n");

// ---------------------------------------------------------------------------------------
// IPA-RA: with -fipa-ra, GCC lets a caller keep values in caller-saved registers across a call
// to a local function that does not touch them. ipara_check does exactly that around a call to
// ipara_leaf (which touches only rax) and returns a bitmask of the registers that changed:
// 1 rcx, 2 rsi, 4 rdi, 8 r8, 0x10 r9, 0x20 r10, 0x40 r11, 0x80 xmm2, 0x100 xmm8, 0x200 xmm15.
__asm__(
    ".text\n"
    ".globl ipara_leaf\n"
    ".type ipara_leaf,@function\n"
    "ipara_leaf:\n"
    "    mov $7, %eax\n"
    "    ret\n"
    ".size ipara_leaf,.-ipara_leaf\n"
    ".globl ipara_check\n"
    ".type ipara_check,@function\n"
    "ipara_check:\n"
    "    push %rbx\n"
    "    mov $0x1111, %rcx\n"
    "    mov $0x2222, %rsi\n"
    "    mov $0x3333, %rdi\n"
    "    mov $0x4444, %r8\n"
    "    mov $0x5555, %r9\n"
    "    mov $0x6666, %r10\n"
    "    mov $0x7777, %r11\n"
    "    mov $0x8888, %rax\n"
    "    movq %rax, %xmm2\n"
    "    mov $0x9999, %rax\n"
    "    movq %rax, %xmm8\n"
    "    mov $0xaaaa, %rax\n"
    "    movq %rax, %xmm15\n"
    "    call ipara_leaf\n"
    "    xor %ebx, %ebx\n"
    "    cmp $0x1111, %rcx\n  je 1f\n  or $0x1, %ebx\n1:\n"
    "    cmp $0x2222, %rsi\n  je 1f\n  or $0x2, %ebx\n1:\n"
    "    cmp $0x3333, %rdi\n  je 1f\n  or $0x4, %ebx\n1:\n"
    "    cmp $0x4444, %r8\n  je 1f\n  or $0x8, %ebx\n1:\n"
    "    cmp $0x5555, %r9\n  je 1f\n  or $0x10, %ebx\n1:\n"
    "    cmp $0x6666, %r10\n  je 1f\n  or $0x20, %ebx\n1:\n"
    "    cmp $0x7777, %r11\n  je 1f\n  or $0x40, %ebx\n1:\n"
    "    movq %xmm2, %rax\n  cmp $0x8888, %rax\n  je 1f\n  or $0x80, %ebx\n1:\n"
    "    movq %xmm8, %rax\n  cmp $0x9999, %rax\n  je 1f\n  or $0x100, %ebx\n1:\n"
    "    movq %xmm15, %rax\n  cmp $0xaaaa, %rax\n  je 1f\n  or $0x200, %ebx\n1:\n"
    "    mov %ebx, %eax\n"
    "    pop %rbx\n"
    "    ret\n"
    ".size ipara_check,.-ipara_check\n");
long ipara_check(void);

// ---------------------------------------------------------------------------------------
// Entries that are not 16-byte aligned (as gcc -O1 lays functions out): edge_cross starts 2
// bytes before a page boundary, so a 5-byte patch at its entry would span two pages (a poke
// lands whole only within one page: hookit refuses it at analysis); edge_fine is an ordinary
// neighbour in the same batch. Both return x + 1.
__asm__(
    ".text\n"
    ".balign 4096\n"
    ".skip 4094\n"
    ".globl edge_cross\n"
    ".type edge_cross,@function\n"
    "edge_cross:\n"
    "    lea 1(%rdi), %rax\n"
    "    nop\n"
    "    nop\n"
    "    ret\n"
    ".size edge_cross,.-edge_cross\n"
    ".globl edge_fine\n"
    ".type edge_fine,@function\n"
    "edge_fine:\n"
    "    lea 1(%rdi), %rax\n"
    "    nop\n"
    "    nop\n"
    "    ret\n"
    ".size edge_fine,.-edge_fine\n");
long edge_cross(long), edge_fine(long);

// ---------------------------------------------------------------------------------------
// A call that stays inside the function for a while (blocked in nanosleep): "park MS" runs
// park(MS) on a new thread and answers at once; "parked" answers its result, or "busy".
__attribute__((noinline, noipa, used)) long park(long ms) {
    usleep((useconds_t)ms * 1000);
    return ms * 2;
}

static atomic_long parked_result = -1;

static void *parker(void *arg) {
    atomic_store(&parked_result, park((long)arg));
    return NULL;
}

// ---------------------------------------------------------------------------------------
// Threads.

struct spinner {
    pthread_t thread;
    long n;         // spin: calls to make
    long calls;     // calls made (written once, at the end)
    long checksum;  // spin: sum of the results; spinbg: how many were wrong
};

static long (*volatile add_ptr)(long, long) = add;

static void *spin_main(void *arg) {
    struct spinner *s = arg;
    long sum = 0;
    for (long i = 0; i < s->n; i++) sum += add_ptr(i, 1);
    s->calls = s->n;
    s->checksum = sum;
    return NULL;
}

static volatile int bg_stop;
static struct spinner bg[256];
static int nbg;
// "pause" parks every spinbg thread between two calls (none is inside add), so a test can read
// counters at a moment when every call made so far has completed; "resume" lets them go.
static volatile int bg_pause;
static atomic_int bg_parked;

// Counts its calls, and the results that were not calls + 1, in locals: no atomics in the loop.
static void *spinbg_main(void *arg) {
    struct spinner *s = arg;
    long calls = 0, bad = 0;
    while (!bg_stop) {
        if (add_ptr(calls, 1) != calls + 1) bad++;
        calls++;
        if (bg_pause) {
            atomic_fetch_add(&bg_parked, 1);
            while (bg_pause) usleep(50);
            atomic_fetch_sub(&bg_parked, 1);
        }
    }
    s->calls = calls;
    s->checksum = bad;
    return NULL;
}

long spin_bad;  // exported: wrong results the last spinbg threads saw (command "spinbad")

// ---------------------------------------------------------------------------------------
// The "progs" command: what libprogs.so's programs recorded, if it is loaded.

static void *sym(const char *name) { return dlsym(RTLD_DEFAULT, name); }

static long sym_long(const char *name) {
    long *p = sym(name);
    return p ? *(volatile long *)p : 0;
}

static double sym_double(const char *name) {
    double *p = sym(name);
    return p ? *(volatile double *)p : 0;
}

static void print_progs(void) {
    if (!sym("count_entry") || !sym("progs_entry_count")) {
        printf("noprogs\n");
        return;
    }
    const char *order = sym("progs_order");
    printf("entry=%ld arg0=%ld arg1=%ld ip=0x%lx cookie=%ld exit=%ld exit_arg0=%ld exit_arg1=%ld "
           "exit_ret=%ld pass=%ld order=%s recursive=%ld recursive_ret=%ld stack7=%ld stack8=%ld "
           "stack_ret=%ld fa0=%.6f fa1=%.6f fret=%.6f fib=%ld\n",
           sym_long("progs_entry_count"), sym_long("progs_last_arg0"), sym_long("progs_last_arg1"),
           (unsigned long)sym_long("progs_last_ip"), sym_long("progs_last_cookie"),
           sym_long("progs_exit_count"), sym_long("progs_exit_arg0"), sym_long("progs_exit_arg1"),
           sym_long("progs_exit_ret"), sym_long("progs_pass_count"), order ? order : "",
           sym_long("progs_recursive_count"), sym_long("progs_recursive_ret"),
           sym_long("progs_stack7"), sym_long("progs_stack8"), sym_long("progs_stack_ret"),
           sym_double("progs_float_arg0"), sym_double("progs_float_arg1"),
           sym_double("progs_float_ret"), sym_long("progs_fib_count"));
}

// "fibpairs": the (n, fib(n)) pairs fmod_fib recorded, in the order the levels returned.
static void print_fibpairs(void) {
    long (*pairs)[2] = sym("progs_fib_pairs");
    if (!pairs) {
        printf("noprogs\n");
        return;
    }
    long n = sym_long("progs_fib_count");
    if (n > 64) n = 64;
    printf("pairs %ld", n);
    for (long i = 0; i < n; i++) printf(" %ld:%ld", pairs[i][0], pairs[i][1]);
    printf("\n");
}

// ---------------------------------------------------------------------------------------

static int word(const char *line, int i, char *out, size_t size) {
    // The i-th whitespace-separated word of line (0 = the command), or 0 if there is none.
    const char *p = line;
    for (int k = 0;; k++) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '\n') return 0;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t' && *e != '\n') e++;
        if (k == i) {
            size_t n = (size_t)(e - p) < size - 1 ? (size_t)(e - p) : size - 1;
            memcpy(out, p, n);
            out[n] = 0;
            return 1;
        }
        p = e;
    }
}

static long arg_long(const char *line, int i, long dflt) {
    char w[64];
    return word(line, i, w, sizeof w) ? strtol(w, NULL, 0) : dflt;
}

static double arg_double(const char *line, int i, double dflt) {
    char w[64];
    return word(line, i, w, sizeof w) ? strtod(w, NULL) : dflt;
}

// The library the last `load` opened (for plugcall and unload).
static void *plugin_handle;

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char line[512];
    printf("ready %d\n", getpid());
    while (fgets(line, sizeof line, stdin)) {
        char cmd[64];
        if (!word(line, 0, cmd, sizeof cmd)) continue;
        long a = arg_long(line, 1, 0), b = arg_long(line, 2, 0);
        if (!strcmp(cmd, "ping")) {
            printf("pong\n");
        } else if (!strcmp(cmd, "pid")) {
            printf("%d\n", getpid());
        } else if (!strcmp(cmd, "add")) {
            printf("%ld\n", add(a, b));
        } else if (!strcmp(cmd, "fallible")) {
            // "fallible X [N]": N calls (default 1); prints the last result with its errno and
            // how many calls failed (returned < 0).
            long n = b > 0 ? b : 1, r = 0, failed = 0;
            int e = 0;
            for (long i = 0; i < n; i++) {
                errno = 0;
                r = fallible(a);
                e = errno;
                if (r < 0) failed++;
            }
            printf("%ld %d %ld\n", r, e, failed);
        } else if (!strcmp(cmd, "greetlit")) {
            // A literal in the executable (memory that is never unmapped), longer than a trace
            // keeps, and a short one.
            long a = greet("The quick brown fox jumps over the lazy dog; the quick brown fox jumps over the lazy dog again.");
            printf("%ld %ld\n", a, greet("fox"));
        } else if (!strcmp(cmd, "greetheap")) {
            char *h = strdup("on the heap");
            printf("%ld\n", greet(h));
            free(h);
        } else if (!strcmp(cmd, "greet")) {
            char name[64];
            printf("%ld\n", word(line, 1, name, sizeof name) ? greet(name) : greet(""));
        } else if (!strcmp(cmd, "calls")) {
            printf("%ld\n", atomic_load(&add_calls));
        } else if (!strcmp(cmd, "sum8")) {
            printf("%ld\n", sum8(1, 2, 3, 4, 5, 6, 7, 8));
        } else if (!strcmp(cmd, "sum8_tail")) {
            printf("%ld\n", sum8_tail(1, 2, 3, 4, 5, 6, 7, 8));
        } else if (!strcmp(cmd, "vsum")) {
            printf("%ld\n", vsum(12, 1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L, 9L, 10L, 11L, 12L));
        } else if (!strcmp(cmd, "bigval")) {
            struct big v = {{1, 2, 3, 4, 5}};
            printf("%ld\n", big_by_value(v));
        } else if (!strcmp(cmd, "bigmake")) {
            struct big v = big_make(arg_long(line, 1, 10));
            printf("%ld\n", v.v[0] + v.v[1] + v.v[2] + v.v[3] + v.v[4]);
        } else if (!strcmp(cmd, "fmuladd")) {
            printf("%.6f\n", fmuladd(arg_double(line, 1, 1.5), arg_double(line, 2, 2.0),
                                     arg_double(line, 3, 0.25)));
        } else if (!strcmp(cmd, "fhalf")) {
            printf("%.6f\n", (double)fhalf((float)arg_double(line, 1, 5.0)));
        } else if (!strcmp(cmd, "fargs8")) {
            printf("%.6f\n", fargs8(1, 2, 3, 4, 5, 6, 7, 8));
        } else if (!strcmp(cmd, "fib")) {
            printf("%ld\n", fib(a));
        } else if (!strcmp(cmd, "escape")) {
            static volatile long escaped_with;
            escaped_with = a;
            if (setjmp(escape_buf) == 0) {
                long r = escape(a);
                printf("returned %ld\n", r);
            } else {
                printf("escaped %ld\n", escaped_with);
            }
        } else if (!strcmp(cmd, "add4")) {
            printf("%d\n", add4((int)a, (int)b));
        } else if (!strcmp(cmd, "add4next")) {
            printf("%d\n", add4_next((int)a));
        } else if (!strcmp(cmd, "ripfirst")) {
            printf("%ld\n", rip_first(a));
        } else if (!strcmp(cmd, "jccfirst")) {
            printf("%ld\n", jcc_first(a));
        } else if (!strcmp(cmd, "callfirst")) {
            printf("%ld\n", call_first(a));
        } else if (!strcmp(cmd, "loopback")) {
            printf("%ld\n", loop_back(a));
        } else if (!strcmp(cmd, "endbradd")) {
            printf("%ld\n", endbr_add(a, b));
        } else if (!strcmp(cmd, "patch5")) {
            printf("%ld\n", patch5(a));
        } else if (!strcmp(cmd, "nopped")) {
            printf("%ld\n", nopped(a));
        } else if (!strcmp(cmd, "regcheck")) {
            struct regres r = regcheck_call();
            printf("%ld %ld\n", r.mask, r.ret);
        } else if (!strcmp(cmd, "aligncheck")) {
            printf("%ld\n", align_check(a));
        } else if (!strcmp(cmd, "spin")) {
            long t = a < 1 ? 1 : a > 256 ? 256 : a;
            struct spinner *s = calloc((size_t)t, sizeof *s);
            for (long i = 0; i < t; i++) {
                s[i].n = b;
                pthread_create(&s[i].thread, NULL, spin_main, &s[i]);
            }
            long total = 0, checksum = 0;
            for (long i = 0; i < t; i++) {
                pthread_join(s[i].thread, NULL);
                total += s[i].calls;
                checksum += s[i].checksum;
            }
            free(s);
            printf("spun %ld %ld\n", total, checksum);
        } else if (!strcmp(cmd, "spinbg")) {
            bg_stop = 0;
            for (long i = 0; i < a && nbg < 256; i++) {
                bg[nbg].calls = bg[nbg].checksum = 0;
                pthread_create(&bg[nbg].thread, NULL, spinbg_main, &bg[nbg]);
                nbg++;
            }
            printf("spinning %d\n", nbg);
        } else if (!strcmp(cmd, "stop")) {
            bg_stop = 1;
            long total = 0, bad = 0;
            for (int i = 0; i < nbg; i++) {
                pthread_join(bg[i].thread, NULL);
                total += bg[i].calls;
                bad += bg[i].checksum;
            }
            nbg = 0;
            spin_bad = bad;
            printf("stopped %ld\n", total);
        } else if (!strcmp(cmd, "exec")) {
            // exec PATH: the process becomes PATH (same pid, stdin and stdout); it answers itself.
            char path[256] = {0};
            sscanf(line, "%*s %255s", path);
            fflush(stdout);
            execl(path, path, (char *)NULL);
            printf("exec failed\n");
        } else if (!strcmp(cmd, "plugcall")) {
            // plugcall N: N calls of the loaded library's plugin_answer(i); their sum.
            long (*answer)(long) = plugin_handle ? (long (*)(long))dlsym(plugin_handle, "plugin_answer") : NULL;
            long sum = 0;
            for (long i = 0; answer && i < a; i++) sum += answer(i);
            if (answer) printf("called %ld %ld\n", a, sum); else printf("not loaded\n");
        } else if (!strcmp(cmd, "load") || !strcmp(cmd, "unload") || !strcmp(cmd, "mapped")) {
            // load PATH: dlopen it; unload: dlclose it; mapped PATH: is it in /proc/self/maps?
            void *handle = plugin_handle;
            char path[256] = {0};
            sscanf(line, "%*s %255s", path);
            if (!strcmp(cmd, "load")) {
                handle = dlopen(path, RTLD_NOW);
                plugin_handle = handle;
                printf("%s\n", handle ? "loaded" : dlerror());
            } else if (!strcmp(cmd, "unload")) {
                printf("%s\n", handle && dlclose(handle) == 0 ? "unloaded" : "not loaded");
                handle = NULL;
                plugin_handle = NULL;
            } else {
                FILE *f = fopen("/proc/self/maps", "r");
                char l[512];
                int found = 0;
                while (f && fgets(l, sizeof l, f)) if (strstr(l, path)) found = 1;
                if (f) fclose(f);
                printf("%s\n", found ? "mapped" : "unmapped");
            }
        } else if (!strcmp(cmd, "forkadd")) {
            // fork; the child calls add(A, B) and exits with the result; the parent answers it.
            pid_t child = fork();
            if (child == 0) _exit((int)add(a, b));
            int status = 0;
            waitpid(child, &status, 0);
            printf("child %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        } else if (!strcmp(cmd, "daemon")) {
            // daemon(3), keeping the directory and stdio: the parent exits inside it, the child
            // answers this and the next commands (stdin's buffer came with it).
            if (daemon(1, 1) != 0) { printf("daemon failed\n"); continue; }
            printf("daemon %d\n", getpid());
        } else if (!strcmp(cmd, "forkpark")) {
            // fork a child that calls add(1, 1) every millisecond until it is killed.
            pid_t child = fork();
            if (child == 0) for (;;) { add(1, 1); usleep(1000); }
            printf("forked %d\n", child);
        } else if (!strcmp(cmd, "park")) {
            pthread_t t;
            atomic_store(&parked_result, -1);
            pthread_create(&t, NULL, parker, (void *)a);
            pthread_detach(t);
            printf("parking\n");
        } else if (!strcmp(cmd, "parked")) {
            long r = atomic_load(&parked_result);
            if (r < 0) printf("busy\n"); else printf("%ld\n", r);
        } else if (!strcmp(cmd, "ipara")) {
            printf("%ld\n", ipara_check());
        } else if (!strcmp(cmd, "edges")) {
            printf("%ld %ld\n", edge_cross(a), edge_fine(a));
        } else if (!strcmp(cmd, "pause")) {
            bg_pause = 1;
            while (atomic_load(&bg_parked) < nbg) usleep(50);
            printf("paused %d\n", nbg);
        } else if (!strcmp(cmd, "resume")) {
            bg_pause = 0;
            while (atomic_load(&bg_parked) > 0) usleep(50);
            printf("resumed\n");
        } else if (!strcmp(cmd, "spinbad")) {
            printf("%ld\n", spin_bad);
        } else if (!strcmp(cmd, "addr")) {
            char name[128];
            void *p = word(line, 1, name, sizeof name) ? sym(name) : NULL;
            if (p) printf("%p\n", p); else printf("missing\n");
        } else if (!strcmp(cmd, "progs")) {
            print_progs();
        } else if (!strcmp(cmd, "fibpairs")) {
            print_fibpairs();
        } else if (!strcmp(cmd, "quit") || !strcmp(cmd, "exit")) {
            printf("bye\n");
            return 0;
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
