// CPtrace: only what Swift cannot call well. Variadic ptrace, the waitpid status
// macros, register structs, a thin walk over libelf, and the remote stub's bytes.
// Every function here is a direct wrapper: no policy, no state.
#ifndef CPTRACE_H
#define CPTRACE_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/signalfd.h>   // signalfd (Glibc's module map leaves it out)
#include <sys/user.h>
#include <sys/wait.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <signal.h>

// ---- ptrace -----------------------------------------------------------------

/// ptrace(2) with the request's four arguments made explicit (ptrace is variadic in glibc).
/// Returns -1 with errno set on failure, as ptrace does.
long hk_ptrace(int request, pid_t tid, uint64_t addr, uint64_t data);

/// PTRACE_PEEKDATA-style requests return data in-band; this one reports errors out of band.
int hk_ptrace_peek(int request, pid_t tid, uint64_t addr, uint64_t *out);

/// PTRACE_GETREGSET / PTRACE_SETREGSET with an iovec; *len is in/out.
int hk_getregset(pid_t tid, int type, void *buf, size_t *len);
int hk_setregset(pid_t tid, int type, const void *buf, size_t len);

enum {
    HK_PTRACE_SEIZE = 0x4206,
    HK_PTRACE_INTERRUPT = 0x4207,
    HK_PTRACE_LISTEN = 0x4208,
    HK_PTRACE_GETEVENTMSG = 0x4201,
    HK_PTRACE_SETOPTIONS = 0x4200,
    HK_PTRACE_GETREGS = 12,
    HK_PTRACE_SETREGS = 13,
    HK_PTRACE_CONT = 7,
    HK_PTRACE_SYSCALL = 24,
    HK_PTRACE_DETACH = 17,
    HK_PTRACE_GETREGSET = 0x4204,
    HK_PTRACE_SETREGSET = 0x4205,
    HK_PTRACE_GETSIGINFO = 0x4202,

    HK_PTRACE_O_TRACESYSGOOD = 1,
    HK_PTRACE_O_TRACECLONE = 8,
    HK_PTRACE_O_TRACEEXEC = 0x10,
    HK_PTRACE_O_EXITKILL = 0x100000,

    HK_PTRACE_EVENT_CLONE = 3,
    HK_PTRACE_EVENT_EXEC = 4,
    HK_PTRACE_EVENT_STOP = 128,

    HK_NT_PRSTATUS = 1,
    HK_NT_X86_XSTATE = 0x202,
};

// ---- waitpid status -----------------------------------------------------------

static inline int hk_wifexited(int s) { return WIFEXITED(s); }
static inline int hk_wexitstatus(int s) { return WEXITSTATUS(s); }
static inline int hk_wifsignaled(int s) { return WIFSIGNALED(s); }
static inline int hk_wtermsig(int s) { return WTERMSIG(s); }
static inline int hk_wifstopped(int s) { return WIFSTOPPED(s); }
static inline int hk_wstopsig(int s) { return WSTOPSIG(s); }
/// The PTRACE_EVENT_* number carried in bits 16..23 of a stop status.
static inline int hk_wptrace_event(int s) { return (s >> 16) & 0xff; }

static inline int hk_sigrtmin(void) { return SIGRTMIN; }

// ---- memory -------------------------------------------------------------------

/// process_vm_readv / process_vm_writev on one local and one remote range.
ssize_t hk_vm_read(pid_t pid, uint64_t remote, void *local, size_t len);
ssize_t hk_vm_write(pid_t pid, uint64_t remote, const void *local, size_t len);
/// process_vm_readv of n remote ranges (n <= IOV_MAX) into one local buffer, back to back.
ssize_t hk_vm_read_many(pid_t pid, const uint64_t *remote, const size_t *lens, size_t n, void *local);

// ---- CPU ----------------------------------------------------------------------

/// CPUID leaf 0xD: bytes the XSAVE area needs for the features enabled in XCR0.
uint32_t hk_xsave_size(void);
/// Time stamp counter ticks per second, measured against CLOCK_MONOTONIC over ~20 ms.
double hk_tsc_hz(void);
/// XCR0 (xgetbv 0): the state components the OS enabled; the same for every process here.
uint64_t hk_xcr0(void);
/// CPUID 0xD.1: XSAVEC (compacted save, skips components in their initial state).
int hk_has_xsavec(void);

// ---- the remote stub ----------------------------------------------------------
// Position-independent x86-64 code assembled into hookit's own read-only data; Injector
// copies these bytes into the tracee. See remote_stub.c for the frame it expects.

/// The stub's bytes and length.
const uint8_t *hk_stub_code(size_t *len);
/// Offsets of the stub's entry points from its first byte.
size_t hk_stub_syscall_offset(void);
size_t hk_stub_call_offset(void);
/// Offset of the instruction after the sentinel syscall: where hookit catches the thread.
size_t hk_stub_sentinel_offset(void);

// ---- libelf -------------------------------------------------------------------

typedef struct {
    uint32_t type;      // PT_*
    uint32_t flags;     // PF_*
    uint64_t offset, vaddr, filesz, memsz, align;
} hk_phdr;

typedef struct {
    int elf_class;      // ELFCLASS32 / ELFCLASS64
    int machine;        // EM_*
    int type;           // ET_EXEC / ET_DYN / ...
    uint64_t entry;
    int nphdr;
    hk_phdr phdr[32];
    uint8_t build_id[64];
    int build_id_len;
} hk_elf_info;

typedef struct {
    const char *name;
    uint64_t value, size;
    int type, bind, shndx;
    int dynamic;        // from .dynsym rather than .symtab
} hk_elf_sym;

typedef struct {
    uint64_t offset;    // r_offset: where the relocated pointer lives
    uint32_t type;      // R_X86_64_*
    int64_t addend;
    const char *sym_name; // "" when the relocation has no symbol
} hk_elf_rela;

typedef void (*hk_sym_cb)(const hk_elf_sym *sym, void *ctx);
typedef void (*hk_rela_cb)(const hk_elf_rela *rela, void *ctx);

/// Reads the header, program headers and build id. Returns 0, or -1 with an error text in err.
int hk_elf_info_fd(int fd, hk_elf_info *info, char *err, size_t errlen);
int hk_elf_info_mem(const void *image, size_t len, hk_elf_info *info, char *err, size_t errlen);

/// Walks .symtab and .dynsym (symbols) and every SHT_RELA section (relocations).
/// Either callback may be NULL. Returns 0, or -1 with an error text in err.
int hk_elf_walk_fd(int fd, hk_sym_cb sym_cb, hk_rela_cb rela_cb, void *ctx, char *err, size_t errlen);
int hk_elf_walk_mem(const void *image, size_t len, hk_sym_cb sym_cb, hk_rela_cb rela_cb, void *ctx,
                    char *err, size_t errlen);

typedef void (*hk_needed_cb)(const char *name, void *ctx);

/// Calls `cb` with each DT_NEEDED name of the dynamic section. Returns 0, or -1.
int hk_elf_needed_fd(int fd, hk_needed_cb cb, void *ctx);

/// Removes the DT_NEEDED entry naming `needed` from the dynamic section of the ELF file open
/// read-write at `fd`, in place. Returns 1 when it was removed, 0 when there was none, -1.
int hk_elf_drop_needed_fd(int fd, const char *needed);



// ---- starting a program -------------------------------------------------------

/// fork(2), then in the child only async-signal-safe calls: close(go_w); wait for one byte on
/// go_r (end of file instead: _exit(127) without exec, the parent is gone); dup2 stdin_fd and
/// stdout_fd (each when >= 0) onto 0 and 1; empty the signal mask; execve(path, argv, envp).
/// If execve fails, its errno is written to err_w and the child _exit(127)s.
/// Returns fork's result in the parent (-1 with errno set on failure).
pid_t hk_fork_exec(const char *path, char *const argv[], char *const envp[],
                   int stdin_fd, int stdout_fd, int go_r, int go_w, int err_w);

// ---- interruption --------------------------------------------------------------

/// Set (to the signal number) by the handlers hk_catch_signals installs; hookit polls it at
/// safe points and detaches instead of dying with the tracee half-changed.
extern volatile sig_atomic_t hk_interrupt_signal;
/// Installs a flag-setting handler (no SA_RESTART, so blocking calls return EINTR) for each
/// signal in the zero-terminated list.
void hk_catch_signals(const int *signals);
/* Memory shared with the tracee's threads (trace ring, counters): loads and stores that Swift
 * can neither tear nor reorder. */
static inline uint64_t hk_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void hk_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
/* The time stamp counter: the clock of the runtime's timings and trace events. */
static inline uint64_t hk_rdtsc(void) { return __builtin_ia32_rdtsc(); }

#endif
