// A thin shim over the Zydis 4 decoder: one x86-64 instruction at a time, described by a
// plain struct Swift can read without touching Zydis types. It classifies only what the
// prologue relocator must know; every decision about what to do with it is made in Swift
// (RemoteTramp/Relocator.swift).
#ifndef HK_ZYDIS_H
#define HK_ZYDIS_H

#include <stdint.h>
#include <stddef.h>

/// What kind of relative branch an instruction is, if any.
enum {
    HK_BRANCH_NONE = 0,
    HK_BRANCH_JMP = 1,     // jmp rel8 / rel32
    HK_BRANCH_JCC = 2,     // jcc rel8 / rel32; `cond` holds the condition code 0-15
    HK_BRANCH_CALL = 3,    // call rel32
    HK_BRANCH_LOOP = 4,    // loop / loopz / loopnz / jrcxz / jecxz: rel8 only, no wide form
    HK_BRANCH_OTHER = 5,   // any other instruction with a relative operand (xbegin, ...)
};

typedef struct {
    uint8_t length;           // bytes
    uint8_t branch;           // HK_BRANCH_*
    uint8_t cond;             // HK_BRANCH_JCC: condition code (the low nibble of 0x7x / 0x0f 0x8x)
    uint8_t rel_offset;       // relative branches: offset of the displacement within the instruction
    uint8_t rel_size;         // ... and its size in bytes (1 or 4)
    uint8_t rip_relative;     // 1 when a memory operand is addressed [rip + disp32]
    uint8_t disp_offset;      // rip_relative: offset of the disp32 within the instruction
    uint8_t disp_size;        // ... and its size in bytes (always 4 in 64-bit mode)
    uint8_t is_endbr64;
    uint8_t is_nop;           // any form Zydis decodes as NOP (0x90, 0x66 0x90, 0x0f 0x1f /0, ...)
    uint8_t is_int3;
    uint8_t ends_flow;        // ret (any form) or jmp (any form): execution never falls through
    uint64_t branch_target;   // relative branches: absolute target, from the runtime address
    uint64_t rip_target;      // rip_relative: absolute address of the memory operand
    char text[96];            // Intel syntax, formatted at the runtime address
} hk_insn;

/// Decodes the instruction at `code` (at most `len` bytes readable) that runs at `address`.
/// Returns 0, or -1 when the bytes are not a valid instruction (or it is cut off by `len`).
int hk_decode_insn(const uint8_t *code, size_t len, uint64_t address, hk_insn *out);

/// Sweeps `len` bytes of code running at `address` linearly (an undecodable byte is skipped)
/// and collects every relative jmp/jcc/call/loop whose target lies inside them: target and the
/// branch's own address, at most `max`. Returns how many.
size_t hk_branch_targets(const uint8_t *code, size_t len, uint64_t address,
                         uint64_t *targets, uint64_t *sources, size_t max);

/// Register-use classes, as bits of hk_writes.written: 0-15 the general registers in hardware
/// order (rax rcx rdx rbx rsp rbp rsi rdi r8..r15), 16-47 vector registers 0-31 (xmm, ymm and
/// zmm alike), 48 the x87/MMX stack, 49 the mask registers k0-7. HK_WRITES_ALL_VECTOR marks
/// instructions that replace the whole vector state (vzeroall, vzeroupper, xrstor, ...).
#define HK_WRITES_X87 48
#define HK_WRITES_MASK 49
#define HK_WRITES_ALL_VECTOR 50

/// How control leaves an instruction, for a walk over a function's code.
enum {
    HK_FLOW_NEXT = 0,          // falls through only
    HK_FLOW_RET = 1,           // ret
    HK_FLOW_JMP = 2,           // direct jmp to `target`
    HK_FLOW_JCC = 3,           // direct conditional branch (or loop/jrcxz) to `target`, or falls through
    HK_FLOW_CALL = 4,          // direct call to `target`
    HK_FLOW_CALL_INDIRECT = 5, // call through a register or memory
    HK_FLOW_JMP_REGISTER = 6,  // jmp through a register, or through [table + index*scale] with no base
    HK_FLOW_JMP_POINTER = 7,   // jmp through memory with a base or rip (a PLT stub, a tail call via a pointer)
    HK_FLOW_STOP = 8,          // ud2, hlt, int3, or an instruction that never falls through otherwise
};

typedef struct {
    uint8_t length;
    uint8_t flow;             // HK_FLOW_*
    uint64_t target;          // HK_FLOW_JMP / JCC / CALL: absolute target; with `through_rip`, the
                              // address of the pointer an indirect call or jmp goes through
    uint64_t written;         // register-use classes written (see above), hidden operands included
    uint8_t through_rip;      // HK_FLOW_CALL_INDIRECT / JMP_POINTER through [rip + disp]
    // For following a function pointer from its load to its call (see RegisterUse):
    uint8_t op;               // HK_OP_*
    int8_t dest;              // HK_OP_LEA / LOAD: the 64-bit general register written, else -1
    int8_t base;              // the memory operand's base: a general register 0-15, HK_BASE_RIP, or -1
    int8_t via;               // indirect call/jmp through a general register: its number, else -1
    uint8_t plain;            // the memory operand is [base] or [rip + disp]: no index, no segment,
                              // and (for a register base) no displacement
    uint64_t address;         // [rip + disp]: its absolute address
} hk_writes;

#define HK_BASE_RIP 16
enum { HK_OP_OTHER = 0, HK_OP_LEA = 1, HK_OP_LOAD = 2 };

/// Decodes the instruction at `code` (running at `address`) for register-use analysis.
/// Returns 0, or -1 when the bytes are not a valid instruction.
int hk_decode_writes(const uint8_t *code, size_t len, uint64_t address, hk_writes *out);

/// A memory operand (or a `lea`'s address) of one instruction, for the stack-argument analysis.
typedef struct {
    int8_t base;              // general register 0-15, HK_BASE_RIP, or -1 (none)
    uint8_t has_index;
    uint8_t is_address;       // lea: only the address is computed
    uint16_t size;            // bytes accessed (0 for lea)
    int64_t disp;
} hk_memop;

typedef struct {
    uint8_t length;
    uint8_t flow;             // HK_FLOW_*, as hk_decode_writes
    uint64_t target;          // HK_FLOW_JMP / JCC / CALL: absolute target
    uint8_t count;            // memory operands, explicit or hidden (at most 2 on x86)
    hk_memop mem[2];
} hk_stack_use;

/// Decodes the instruction at `code` (running at `address`) for its memory operands.
/// Returns 0, or -1 when the bytes are not a valid instruction.
int hk_decode_stack_use(const uint8_t *code, size_t len, uint64_t address, hk_stack_use *out);

#endif
