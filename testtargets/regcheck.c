// regcheck: do hooks keep the registers a caller may rely on? (design.md, invariant 5)
//
// GCC's -fipa-ra (on at -O2) lets a caller keep values in *caller-saved* registers across a
// direct call to a function whose body it has seen, in the registers that function does not
// touch. So a hook may change only what the original would have changed (its return
// registers), on every path: resume, call-original, skip (override, fmod_ret), replace.
//
// Same protocol as hooktarget.c (HOOKTARGETS.md): prints "ready PID", then reads one command
// per line on stdin and answers exactly one line on stdout (line-buffered).
//
// Two kinds of caller live here:
// - asm probes around three asm leaves (add_leaf, pair_leaf, dbl_leaf) whose register use is
//   exact: a probe loads a distinct magic value into every register it can, dumps them all,
//   calls the leaf directly, dumps them all again; C compares the dumps.
// - plain C compiled by gcc (-O2, so -fipa-ra): sum_loop keeps its loop state in caller-saved
//   registers across `call add` (see the comment above sum_loop).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------
// The leaves. Each is global, exported (-rdynamic), at least 5 bytes, and ends in ret.
//   add_leaf(a, b)  = a + b in rax                     touches rax only   (7 bytes)
//   pair_leaf(a, b) = {a + b, a - b} in rax:rdx        touches rax, rdx   (13 bytes)
//   dbl_leaf(x, y)  = x + y in xmm0                    touches xmm0 only  (9 bytes)
long add_leaf(long a, long b);
struct pair { long lo, hi; };
struct pair pair_leaf(long a, long b);
double dbl_leaf(double x, double y);

__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl add_leaf\n"
    ".type add_leaf,@function\n"
    "add_leaf:\n"
    "    mov %rdi,%rax\n"
    "    add %rsi,%rax\n"
    "    ret\n"
    ".size add_leaf,.-add_leaf\n"

    ".p2align 4\n"
    ".globl pair_leaf\n"
    ".type pair_leaf,@function\n"
    "pair_leaf:\n"
    "    mov %rdi,%rax\n"
    "    add %rsi,%rax\n"
    "    mov %rdi,%rdx\n"
    "    sub %rsi,%rdx\n"
    "    ret\n"
    ".size pair_leaf,.-pair_leaf\n"

    ".p2align 4\n"
    ".globl dbl_leaf\n"
    ".type dbl_leaf,@function\n"
    "dbl_leaf:\n"
    "    movapd %xmm0,%xmm0\n"     // 4 bytes that write nothing new: the patch needs 5
    "    addsd %xmm1,%xmm0\n"
    "    ret\n"
    ".size dbl_leaf,.-dbl_leaf\n");

// ---------------------------------------------------------------------------------------
// The probes: probe_LEAF(args..., struct probe *out). A probe saves the callee-saved
// registers, puts a magic value in every general register but rbx (the dump pointer) and rbp
// (the frame) and in xmm0-15 (both halves), keeps the leaf's arguments in its argument
// registers, dumps every register to out->before, calls the leaf directly — as an -fipa-ra
// caller does — and dumps every register to out->after.

// Order of the general registers in a dump; mask bit i is gprs[i], bit 16+i is xmm i.
enum { G_RAX, G_RCX, G_RDX, G_RSI, G_RDI, G_R8, G_R9, G_R10, G_R11, G_R12, G_R13, G_R14, G_R15, G_RSP, NGPR };
static const char *const gpr_names[NGPR] = {"rax", "rcx", "rdx", "rsi", "rdi", "r8",  "r9",
                                            "r10", "r11", "r12", "r13", "r14", "r15", "rsp"};
#define XMM_BIT(i) (1ul << (16 + (i)))

struct regs {
    uint64_t gpr[NGPR];      // 112 bytes
    uint64_t xmm[16][2];     // at 112: low, high quadword
};
struct probe {
    struct regs before;      // at 0: at the call instruction
    struct regs after;       // at 368: right after the call returned
};
_Static_assert(sizeof(struct regs) == 368, "the asm below hard-codes the layout");

// The magic values: general registers (the argument registers that carry arguments get those
// instead) and a table of 16 xmm values, two distinct quadwords each.
#define MAGIC(n) "0x5a5a00000000" #n
__attribute__((used, aligned(16))) const uint64_t regcheck_xmm_magic[16][2] = {
    {0x1000000000000a00, 0x1000000000000b00}, {0x1100000000000a01, 0x1100000000000b01},
    {0x1200000000000a02, 0x1200000000000b02}, {0x1300000000000a03, 0x1300000000000b03},
    {0x1400000000000a04, 0x1400000000000b04}, {0x1500000000000a05, 0x1500000000000b05},
    {0x1600000000000a06, 0x1600000000000b06}, {0x1700000000000a07, 0x1700000000000b07},
    {0x1800000000000a08, 0x1800000000000b08}, {0x1900000000000a09, 0x1900000000000b09},
    {0x1a00000000000a0a, 0x1a00000000000b0a}, {0x1b00000000000a0b, 0x1b00000000000b0b},
    {0x1c00000000000a0c, 0x1c00000000000b0c}, {0x1d00000000000a0d, 0x1d00000000000b0d},
    {0x1e00000000000a0e, 0x1e00000000000b0e}, {0x1f00000000000a0f, 0x1f00000000000b0f},
};

#define DUMP(o)                                                                             \
    "    mov %rax," #o "+0(%rbx)\n    mov %rcx," #o "+8(%rbx)\n    mov %rdx," #o "+16(%rbx)\n" \
    "    mov %rsi," #o "+24(%rbx)\n   mov %rdi," #o "+32(%rbx)\n   mov %r8," #o "+40(%rbx)\n"  \
    "    mov %r9," #o "+48(%rbx)\n    mov %r10," #o "+56(%rbx)\n   mov %r11," #o "+64(%rbx)\n" \
    "    mov %r12," #o "+72(%rbx)\n   mov %r13," #o "+80(%rbx)\n   mov %r14," #o "+88(%rbx)\n" \
    "    mov %r15," #o "+96(%rbx)\n   mov %rsp," #o "+104(%rbx)\n"                            \
    "    movdqu %xmm0," #o "+112(%rbx)\n  movdqu %xmm1," #o "+128(%rbx)\n"                    \
    "    movdqu %xmm2," #o "+144(%rbx)\n  movdqu %xmm3," #o "+160(%rbx)\n"                    \
    "    movdqu %xmm4," #o "+176(%rbx)\n  movdqu %xmm5," #o "+192(%rbx)\n"                    \
    "    movdqu %xmm6," #o "+208(%rbx)\n  movdqu %xmm7," #o "+224(%rbx)\n"                    \
    "    movdqu %xmm8," #o "+240(%rbx)\n  movdqu %xmm9," #o "+256(%rbx)\n"                    \
    "    movdqu %xmm10," #o "+272(%rbx)\n movdqu %xmm11," #o "+288(%rbx)\n"                   \
    "    movdqu %xmm12," #o "+304(%rbx)\n movdqu %xmm13," #o "+320(%rbx)\n"                   \
    "    movdqu %xmm14," #o "+336(%rbx)\n movdqu %xmm15," #o "+352(%rbx)\n"

#define XMM_MAGIC(i) "    movdqu regcheck_xmm_magic+16*" #i "(%rip),%xmm" #i "\n"
#define ALL_XMM_MAGIC                                                                             \
    XMM_MAGIC(0) XMM_MAGIC(1) XMM_MAGIC(2) XMM_MAGIC(3) XMM_MAGIC(4) XMM_MAGIC(5) XMM_MAGIC(6)     \
    XMM_MAGIC(7) XMM_MAGIC(8) XMM_MAGIC(9) XMM_MAGIC(10) XMM_MAGIC(11) XMM_MAGIC(12) XMM_MAGIC(13) \
    XMM_MAGIC(14) XMM_MAGIC(15)

// Entry rsp = 8 (mod 16); rbp and five pushes make it 0 (mod 16) again after `sub $24`, and
// 0(%rsp), 8(%rsp) are scratch for dbl's arguments. The out pointer arrives in OUTREG.
#define PROLOGUE(name, outreg)                                      \
    ".p2align 4\n.globl " name "\n.type " name ",@function\n" name ":\n" \
    "    push %rbp\n    mov %rsp,%rbp\n"                             \
    "    push %rbx\n    push %r12\n    push %r13\n    push %r14\n    push %r15\n" \
    "    sub $24,%rsp\n"                                             \
    "    mov " outreg ",%rbx\n"                                      \
    "    movabs $" MAGIC(c0) ",%rax\n    movabs $" MAGIC(c1) ",%rcx\n" \
    "    movabs $" MAGIC(c5) ",%r8\n     movabs $" MAGIC(c6) ",%r9\n"  \
    "    movabs $" MAGIC(c7) ",%r10\n    movabs $" MAGIC(c8) ",%r11\n" \
    "    movabs $" MAGIC(c9) ",%r12\n    movabs $" MAGIC(ca) ",%r13\n" \
    "    movabs $" MAGIC(cb) ",%r14\n    movabs $" MAGIC(cc) ",%r15\n"
#define EPILOGUE(name)                                                                   \
    "    add $24,%rsp\n"                                                                 \
    "    pop %r15\n    pop %r14\n    pop %r13\n    pop %r12\n    pop %rbx\n    pop %rbp\n" \
    "    ret\n.size " name ",.-" name "\n"

// The rdx value each integer probe's caller holds at the call (pair_leaf overwrites it).
#define RDX_MAGIC MAGIC(c2)

__asm__(
    ".text\n"
    // probe_add(a, b, out): rdi = a, rsi = b, rdx = magic.
    PROLOGUE("probe_add", "%rdx")
    "    movabs $" RDX_MAGIC ",%rdx\n"
    ALL_XMM_MAGIC
    DUMP(0)
    "    call add_leaf\n"
    DUMP(368)
    EPILOGUE("probe_add")

    // probe_pair(a, b, out): the same registers around pair_leaf.
    PROLOGUE("probe_pair", "%rdx")
    "    movabs $" RDX_MAGIC ",%rdx\n"
    ALL_XMM_MAGIC
    DUMP(0)
    "    call pair_leaf\n"
    DUMP(368)
    EPILOGUE("probe_pair")

    // probe_dbl(x, y, out): x, y in the low halves of xmm0, xmm1 (their high halves and every
    // other register magic); rdi = out is replaced by magic too, and rsi, rdx.
    PROLOGUE("probe_dbl", "%rdi")
    "    movsd %xmm0,0(%rsp)\n    movsd %xmm1,8(%rsp)\n"
    "    movabs $" MAGIC(c2) ",%rdx\n    movabs $" MAGIC(c3) ",%rsi\n    movabs $" MAGIC(c4) ",%rdi\n"
    ALL_XMM_MAGIC
    "    movlpd 0(%rsp),%xmm0\n    movlpd 8(%rsp),%xmm1\n"
    DUMP(0)
    "    call dbl_leaf\n"
    DUMP(368)
    EPILOGUE("probe_dbl"));

void probe_add(long a, long b, struct probe *out);
void probe_pair(long a, long b, struct probe *out);
void probe_dbl(double x, double y, struct probe *out);

// What changed between the dumps, but for the registers in `returns` (the leaf's own).
static unsigned long changed(const struct probe *p, unsigned long returns) {
    unsigned long mask = 0;
    for (int i = 0; i < NGPR; i++)
        if (p->before.gpr[i] != p->after.gpr[i]) mask |= 1ul << i;
    for (int i = 0; i < 16; i++)
        if (p->before.xmm[i][0] != p->after.xmm[i][0] || p->before.xmm[i][1] != p->after.xmm[i][1])
            mask |= XMM_BIT(i);
    return mask & ~returns;
}

static double xmm_double(const uint64_t q[2]) {
    double d;
    memcpy(&d, &q[0], sizeof d);
    return d;
}

// The checks. Each returns the mask of registers the call changed that the leaf does not
// write (0 is right on every path) and what the caller got back.
static unsigned long check_add(long a, long b, long *result) {
    struct probe p;
    probe_add(a, b, &p);
    *result = (long)p.after.gpr[G_RAX];
    return changed(&p, 1ul << G_RAX);
}

// rdx_at_call: the caller's rdx at the call; a skipped pair_leaf whose program did not set
// ctx->ret_hi must leave rdx at that.
static unsigned long check_pair(long a, long b, long *lo, long *hi, long *rdx_at_call) {
    struct probe p;
    probe_pair(a, b, &p);
    *lo = (long)p.after.gpr[G_RAX];
    *hi = (long)p.after.gpr[G_RDX];
    *rdx_at_call = (long)p.before.gpr[G_RDX];
    return changed(&p, 1ul << G_RAX | 1ul << G_RDX);
}

// xmm0 is dbl_leaf's (its high half is not compared either: addsd keeps it, a C replacement
// need not). rax is not compared: a hook may always set it (a skip returns ctx->ret, a
// replacement's rax comes back), and no caller of a double function keeps anything there.
static unsigned long check_dbl(double x, double y, double *result) {
    struct probe p;
    probe_dbl(x, y, &p);
    *result = xmm_double(p.after.xmm[0]);
    return changed(&p, 1ul << G_RAX | XMM_BIT(0));
}

// ---------------------------------------------------------------------------------------
// Plain C: what gcc itself does. add is noinline (and noclone, so the call is to add itself,
// not to a constant-propagated copy) but not noipa, so -fipa-ra sees that add writes only
// eax and lets sum_loop keep its state in caller-saved registers across `call add`.
// With gcc 12.2 (-O2 -fno-omit-frame-pointer), objdump -d shows the loop:
//     mov $0x1,%esi ; mov %edx,%edi ; addsd %xmm1,%xmm0 ; call add ; cltq ;
//     add %rax,%rcx ; sub $0x1,%rdx ; jne <loop>
// i.e. the countdown i in rdx, the sum in rcx, d in xmm0 and the constant 0.5 in xmm1, all
// caller-saved and all live across the call. A hook that zeroes rdx (a skip path that loads
// ctx->ret_hi) makes the countdown never reach 0: the loop hangs, and the test's timeout says
// so; one that clobbers rcx or xmm0/xmm1 gives a wrong sum.
__attribute__((noinline, noclone, used)) int add(int a, int b) { return a + b; }

// sum over i = n..1 of add(i, 1), plus n/2 (0.5 added up n times).
__attribute__((noinline, noclone, used)) long sum_loop(long n) {
    long s = 0;
    double d = 0;
    for (long i = n; i > 0; i -= 1) {
        s += add((int)i, 1);
        d += 0.5;
    }
    return s + (long)d;
}

// ---------------------------------------------------------------------------------------
// spin: a background thread calling the three probes in a tight loop. It ORs every mask into
// spin_ormask and counts results no path can give (spin_wrong). A result is right if it is
// the original's or what one of the tests' hooks gives: 7 (--override =7), 42 (skip_with_42),
// +1000 (clobber_*), +2000 (orig_add), and for pair_leaf skipped: lo 7/42 with hi = the
// caller's rdx; for dbl_leaf skipped: x (xmm0 left as the caller's).
atomic_long spin_iterations, spin_ormask, spin_wrong;
static atomic_int spin_run;
static pthread_t spin_thread;

static int add_ok(long a, long b, long r) {
    return r == a + b || r == 7 || r == 42 || r == a + b + 1000 || r == a + b + 2000;
}

static int pair_ok(long a, long b, long lo, long hi, long rdx) {
    if (lo == a + b) return hi == a - b;
    if (lo == a + b + 1000) return hi == a - b + 1000;
    if (lo == 7 || lo == 42) return hi == rdx;
    return 0;
}

static int dbl_ok(double x, double y, double r) { return r == x + y || r == x + y + 1000.0 || r == x; }

static void *spin_main(void *arg) {
    (void)arg;
    for (long i = 0; atomic_load_explicit(&spin_run, memory_order_relaxed); i++) {
        long a = i & 0xffff, b = 3, r, lo, hi, rdx;
        double x = (double)(i & 0xff) + 0.5, y = 0.25, d;
        unsigned long m = 0;
        long bad = 0;
        m |= check_add(a, b, &r);
        bad += !add_ok(a, b, r);
        m |= check_pair(a, b, &lo, &hi, &rdx);
        bad += !pair_ok(a, b, lo, hi, rdx);
        m |= check_dbl(x, y, &d);
        bad += !dbl_ok(x, y, d);
        if (m) atomic_fetch_or(&spin_ormask, (long)m);
        if (bad) atomic_fetch_add(&spin_wrong, bad);
        atomic_fetch_add_explicit(&spin_iterations, 1, memory_order_relaxed);
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------

static int word(const char *line, int i, char *out, size_t n) {
    const char *p = line;
    for (int k = 0;; k++) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '\n') return 0;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') p++;
        if (k == i) {
            size_t len = (size_t)(p - s) < n - 1 ? (size_t)(p - s) : n - 1;
            memcpy(out, s, len);
            out[len] = 0;
            return 1;
        }
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

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char line[512];
    printf("ready %d\n", getpid());
    while (fgets(line, sizeof line, stdin)) {
        char cmd[64];
        if (!word(line, 0, cmd, sizeof cmd)) continue;
        if (!strcmp(cmd, "ping")) {
            printf("pong\n");
        } else if (!strcmp(cmd, "pid")) {
            printf("%d\n", getpid());
        } else if (!strcmp(cmd, "check_add")) {
            long r;
            unsigned long m = check_add(arg_long(line, 1, 3), arg_long(line, 2, 4), &r);
            printf("%#lx %ld\n", m, r);
        } else if (!strcmp(cmd, "check_pair")) {
            long lo, hi, rdx;
            unsigned long m = check_pair(arg_long(line, 1, 10), arg_long(line, 2, 3), &lo, &hi, &rdx);
            printf("%#lx %ld %ld %ld\n", m, lo, hi, rdx);
        } else if (!strcmp(cmd, "check_dbl")) {
            double r;
            unsigned long m = check_dbl(arg_double(line, 1, 1.5), arg_double(line, 2, 2.25), &r);
            printf("%#lx %.17g\n", m, r);
        } else if (!strcmp(cmd, "loop")) {
            printf("%ld\n", sum_loop(arg_long(line, 1, 1000)));
        } else if (!strcmp(cmd, "spin")) {
            if (!atomic_exchange(&spin_run, 1)) pthread_create(&spin_thread, NULL, spin_main, NULL);
            printf("spinning\n");
        } else if (!strcmp(cmd, "spinstat")) {
            long n = atomic_exchange(&spin_iterations, 0);
            long m = atomic_exchange(&spin_ormask, 0);
            long w = atomic_exchange(&spin_wrong, 0);
            printf("%ld %#lx %ld\n", n, (unsigned long)m, w);
        } else if (!strcmp(cmd, "spinstop")) {
            if (atomic_exchange(&spin_run, 0)) pthread_join(spin_thread, NULL);
            printf("stopped\n");
        } else if (!strcmp(cmd, "regnames")) {
            // The mask bits, for people reading a failure: "0:rax 1:rcx ... 16:xmm0 ...".
            for (int i = 0; i < NGPR; i++) printf("%s%d:%s", i ? " " : "", i, gpr_names[i]);
            for (int i = 0; i < 16; i++) printf(" %d:xmm%d", 16 + i, i);
            printf("\n");
        } else if (!strcmp(cmd, "quit") || !strcmp(cmd, "exit")) {
            printf("bye\n");
            return 0;
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
