// The loader's debugger notification, followed: hookit patches the dynamic loader's r_brk
// function (_dl_debug_state, a bare `ret`) to jump to hookit_rt_loader_entry, so that a
// library the process maps later is hooked before any of its code can run (issue 17).
//
// Protocol: at each notification with r_state == RT_CONSISTENT (a dlopen has mapped its new
// objects, before it relocates them or runs their constructors; a dlclose has unmapped its
// objects), the thread sends its tid over a SOCK_SEQPACKET socket whose other end hookit holds,
// and waits until hookit sends that tid back: hookit patches the new modules meanwhile.
//
// Why a socket and not a breakpoint: if hookit dies, the kernel closes its end, the send fails
// (EPIPE, no signal: MSG_NOSIGNAL) or the wait ends (EOF), and the loader goes on as without
// hookit. An int3 would kill the process at its next dlopen (design.md invariant 4).
//
// The loader calls this with its lock held, so only one thread at a time is here per process.
// Nothing here calls libc (which may be hooked, and whose dlopen-related state is mid-change):
// raw syscalls only, and errno is left alone.
#define _GNU_SOURCE
#include "rt_internal.h"
#include <errno.h>

// The socket's tracee end; -1: not following (hookit sets it, and clears it before leaving).
volatile int hookit_rt_loader_fd = -1;
// &_r_debug.r_state in the loader (hookit sets it): only RT_CONSISTENT (0) is worth a stop.
const volatile int *volatile hookit_rt_loader_state;
// Non-zero while hookit itself loads a library into the process: it is waiting for that call
// and cannot answer, and its own libraries are not the program's.
volatile int hookit_rt_loader_quiet;

enum { SYS_sendto = 44, SYS_recvfrom = 45, SYS_gettid = 186 };
enum { RT_MSG_DONTWAIT = 0x40, RT_MSG_NOSIGNAL = 0x4000 };

__attribute__((used)) static void loader_notify(void) {
    int fd = hookit_rt_loader_fd;
    const volatile int *state = hookit_rt_loader_state;
    if (fd < 0 || hookit_rt_loader_quiet || (state && *state != 0)) return;
    uint32_t tid = (uint32_t)rt_syscall3(SYS_gettid, 0, 0, 0);
    if (rt_syscall6(SYS_sendto, fd, (long)&tid, 4, RT_MSG_DONTWAIT | RT_MSG_NOSIGNAL, 0, 0) != 4) return;
    uint32_t reply = 0;
    long r;
    // A reply for another thread cannot come (one thread at a time, one reply per message), but
    // a signal handler may interrupt the wait: wait again.
    do {
        r = rt_syscall6(SYS_recvfrom, fd, (long)&reply, 4, 0, 0, 0);
    } while (r == -EINTR || (r == 4 && reply != tid));
}

// The loader's callers keep values in any register across the call (gcc -fipa-ra sees an empty
// function): every register and the flags come back as they were (design.md invariant 5). The
// runtime is built with -mgeneral-regs-only, so only general registers need saving. At entry
// rsp is 8 mod 16 (a call); ten pushes and 8 bytes make it 0 mod 16 at the call.
__asm__(
    ".text\n"
    ".globl hookit_rt_loader_entry\n"
    ".type hookit_rt_loader_entry, @function\n"
    "hookit_rt_loader_entry:\n\t"
    "pushfq\n\t"
    "pushq %rax\n\tpushq %rcx\n\tpushq %rdx\n\tpushq %rsi\n\tpushq %rdi\n\t"
    "pushq %r8\n\tpushq %r9\n\tpushq %r10\n\tpushq %r11\n\t"
    "subq $8, %rsp\n\t"
    "cld\n\t"
    "call loader_notify\n\t"
    "addq $8, %rsp\n\t"
    "popq %r11\n\tpopq %r10\n\tpopq %r9\n\tpopq %r8\n\t"
    "popq %rdi\n\tpopq %rsi\n\tpopq %rdx\n\tpopq %rcx\n\tpopq %rax\n\t"
    "popfq\n\t"
    "ret\n"
    ".size hookit_rt_loader_entry, . - hookit_rt_loader_entry\n");
