// --if: a call filter, evaluated in the calling thread before the programs it guards run. hookit
// compiles the expression (FilterProgram.swift) into a few instructions of a stack machine in
// shared memory; the image calls hookit_rt_filter and skips the guarded programs when it returns
// 0 (ImageBuilder+Filters.swift). Like the other runtime programs it calls no libc function, so
// it needs no recursion guard, and it never faults: a string argument is read by rt_copy_string.
#include "rt_internal.h"

// Nanoseconds per TSC tick in 32.32 fixed point (timing.c).
extern volatile uint64_t hookit_rt_ns_per_tick_q32;

// One instruction. The value stack holds truth values, one bit each, the top in bit 0.
struct filter_insn {
    uint8_t op;         // enum op
    uint8_t operand;    // enum operand (TEST), the argument (STR_*)
    uint8_t cmp;        // enum cmp (TEST)
    uint8_t pad;
    uint32_t aux;       // JUMP_*: the instruction to go on at; STR_*: the string's length
    uint64_t value;     // TEST: the constant; STR_*: the string's address (in this block)
};
_Static_assert(sizeof(struct filter_insn) == 16, "FilterProgram.Instruction (FilterProgram.swift)");

struct filter {
    uint32_t count, stable_count;       // instructions; ranges of memory never unmapped
    const uint64_t (*stable)[2];        // [start, end), sorted (for rt_copy_string)
    struct filter_insn insn[];
};

enum op { OP_TEST = 1, OP_STR_EQ = 2, OP_STR_GLOB = 3, OP_NOT = 4, OP_JUMP_FALSE = 5, OP_JUMP_TRUE = 6, OP_POP = 7 };
enum operand { ARG0 = 0, RET = 6, TID = 7, NS = 8 };
enum cmp { EQ, NE, LT, LE, GT, GE };

// Strings are compared on their first bytes: a glob on a longer string sees it cut there.
#define FILTER_STRING_BYTES 256

static int64_t operand(const struct hookit_ctx *ctx, unsigned which, uint64_t entry_ticks) {
    if (which < 6) return (int64_t)ctx->args[which];
    switch (which) {
    case RET: return (int64_t)ctx->ret;
    case TID: return hookit_rt_tid();
    case NS:
        if (!entry_ticks) return 0;
        return (int64_t)(((unsigned __int128)(rt_ticks() - entry_ticks) * hookit_rt_ns_per_tick_q32) >> 32);
    default: return 0;
    }
}

static unsigned compare(unsigned cmp, int64_t a, int64_t b) {
    switch (cmp) {
    case EQ: return a == b;
    case NE: return a != b;
    case LT: return a < b;
    case LE: return a <= b;
    case GT: return a > b;
    case GE: return a >= b;
    default: return 0;
    }
}

// `*` any run of bytes, `?` any one byte, `\` takes the next byte literally. Backtracks only to
// the last `*`, so linear in practice.
static unsigned glob(const char *p, uint64_t plen, const char *s) {
    uint64_t pi = 0, star = (uint64_t)-1;
    const char *mark = s;
    while (*s) {
        if (pi < plen && p[pi] == '*') { star = ++pi; mark = s; continue; }
        if (pi < plen) {
            char c = p[pi];
            uint64_t next = pi + 1;
            if (c == '\\' && next < plen) { c = p[next]; next++; }
            else if (c == '?') { pi = next; s++; continue; }
            if (c == *s) { pi = next; s++; continue; }
        }
        if (star == (uint64_t)-1) return 0;
        pi = star;
        s = ++mark;
    }
    while (pi < plen && p[pi] == '*') pi++;
    return pi == plen;
}

static unsigned string_test(const struct filter *f, const struct filter_insn *in, uint64_t arg) {
    char buf[FILTER_STRING_BYTES];
    const char *want = (const char *)(uintptr_t)in->value;
    uint64_t len = in->aux;
    // `==` needs one byte past the literal to see whether the string goes on.
    uint64_t size = in->op == OP_STR_EQ && len + 2 <= sizeof buf ? len + 2 : sizeof buf;
    if (rt_copy_string(f->stable, f->stable_count, buf, arg, size) != 0) return 0;
    if (in->op == OP_STR_GLOB) return glob(want, len, buf);
    for (uint64_t i = 0; i < len; i++) {
        if (buf[i] != want[i]) return 0;
    }
    return buf[len] == 0;
}

// 1: the call passes. `entry_ticks`: the TSC at the call's entry (for `ns`), 0 if not taken.
uint64_t hookit_rt_filter(struct hookit_ctx *ctx, const struct filter *f, uint64_t entry_ticks) {
    uint64_t stack = 0;
    for (uint32_t pc = 0; pc < f->count;) {
        const struct filter_insn *in = &f->insn[pc++];
        switch (in->op) {
        case OP_TEST:
            stack = stack << 1 | compare(in->cmp, operand(ctx, in->operand, entry_ticks), (int64_t)in->value);
            break;
        case OP_STR_EQ:
        case OP_STR_GLOB:
            stack = stack << 1 | string_test(f, in, in->operand < 6 ? ctx->args[in->operand] : ctx->ret);
            break;
        case OP_NOT: stack ^= 1; break;
        case OP_JUMP_FALSE: if (!(stack & 1)) pc = in->aux; break;   // forward only: it ends
        case OP_JUMP_TRUE: if (stack & 1) pc = in->aux; break;
        case OP_POP: stack >>= 1; break;
        default: return 0;
        }
    }
    return stack & 1;
}
