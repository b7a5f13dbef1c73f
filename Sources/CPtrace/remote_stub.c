#include "cptrace.h"

// The remote stub: position-independent code that Injector copies into the tracee to run a
// syscall or a function call on a borrowed thread. It is self-restoring (design.md,
// "A tracer's death"): hookit changes the thread with one PTRACE_SETREGS, taken last; from
// then on, if hookit dies, the thread finishes the stub, restores every register from its own
// stack and jumps back to where it was. Only when hookit is alive does it catch the thread at
// the sentinel syscall and restore the registers itself (skipping the stub's own restore).
//
// Frame, written by hookit below the thread's red zone (orig_rsp = the thread's rsp):
//   R = orig_rsp - 264 : r15 r14 r13 r12 r11 r10 r9 r8 rbp rdi rsi rdx rcx rbx rax rflags rip
//                        (rip at orig_rsp - 136; the 128-byte red zone above it is never touched)
//   A = R - 64         : [A] = syscall number or function address, [A+8..A+48] = six arguments,
//                        [A+56] = result
// On entry rbx = A. For a call, rsp = a 64-aligned, zeroed XSAVE area of hk_xsave_size() bytes
// (the callee's frames grow below it); the FP/SSE/AVX state is saved there around the call.
// The save mask leaves out AMX tile state (bits 17, 18): restoring an XFD-armed component in a
// process that never asked for AMX would raise #NM and kill it; hookit's code never uses tiles.
// `ret 128` pops rip from orig_rsp - 136 and lands rsp exactly on orig_rsp.
__asm__(
    ".pushsection .rodata.hk_stub, \"a\"\n"
    ".intel_syntax noprefix\n"
    ".globl hk_stub_begin, hk_stub_syscall_entry, hk_stub_call_entry, hk_stub_sentinel_after, hk_stub_end\n"
    "hk_stub_begin:\n"
    "hk_stub_syscall_entry:\n"
    "  mov rax, [rbx]\n"
    "  mov rdi, [rbx+8]\n"
    "  mov rsi, [rbx+16]\n"
    "  mov rdx, [rbx+24]\n"
    "  mov r10, [rbx+32]\n"
    "  mov r8,  [rbx+40]\n"
    "  mov r9,  [rbx+48]\n"
    "  syscall\n"
    "  mov [rbx+56], rax\n"
    "  jmp 2f\n"
    "hk_stub_call_entry:\n"
    "  mov eax, 0xfff9ffff\n"
    "  mov edx, -1\n"
    "  xsave64 [rsp]\n"
    "  mov rdi, [rbx+8]\n"
    "  mov rsi, [rbx+16]\n"
    "  mov rdx, [rbx+24]\n"
    "  mov rcx, [rbx+32]\n"
    "  mov r8,  [rbx+40]\n"
    "  mov r9,  [rbx+48]\n"
    "  xor eax, eax\n"             // al = 0 vector registers, for variadic callees
    "  call [rbx]\n"
    "  mov [rbx+56], rax\n"
    "  mov eax, 0xfff9ffff\n"
    "  mov edx, -1\n"
    "  xrstor64 [rsp]\n"
    "2:\n"
    "  mov eax, 39\n"               // getpid: the sentinel hookit waits for at syscall entry
    "  syscall\n"
    "hk_stub_sentinel_after:\n"
    "  lea rsp, [rbx+64]\n"
    "  pop r15\n pop r14\n pop r13\n pop r12\n pop r11\n pop r10\n pop r9\n pop r8\n"
    "  pop rbp\n pop rdi\n pop rsi\n pop rdx\n pop rcx\n pop rbx\n pop rax\n"
    "  popfq\n"
    "  ret 128\n"
    "hk_stub_end:\n"
    ".att_syntax prefix\n"
    ".popsection\n");

extern const uint8_t hk_stub_begin[], hk_stub_syscall_entry[], hk_stub_call_entry[],
    hk_stub_sentinel_after[], hk_stub_end[];

const uint8_t *hk_stub_code(size_t *len) {
    *len = (size_t)(hk_stub_end - hk_stub_begin);
    return hk_stub_begin;
}
size_t hk_stub_syscall_offset(void) { return (size_t)(hk_stub_syscall_entry - hk_stub_begin); }
size_t hk_stub_call_offset(void) { return (size_t)(hk_stub_call_entry - hk_stub_begin); }
size_t hk_stub_sentinel_offset(void) { return (size_t)(hk_stub_sentinel_after - hk_stub_begin); }
