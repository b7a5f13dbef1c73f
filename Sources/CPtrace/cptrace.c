// Thin wrappers only: see include/cptrace.h for what each one wraps.
#define _GNU_SOURCE
#include "cptrace.h"
#include <errno.h>
#include <unistd.h>
#include <cpuid.h>
#include <time.h>

long hk_ptrace(int request, pid_t tid, uint64_t addr, uint64_t data) {
    return ptrace((enum __ptrace_request)request, tid, (void *)addr, (void *)data);
}

int hk_ptrace_peek(int request, pid_t tid, uint64_t addr, uint64_t *out) {
    errno = 0;
    long v = ptrace((enum __ptrace_request)request, tid, (void *)addr, 0);
    if (v == -1 && errno != 0) return -1;
    *out = (uint64_t)v;
    return 0;
}

int hk_getregset(pid_t tid, int type, void *buf, size_t *len) {
    struct iovec iov = { buf, *len };
    if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)type, &iov) == -1) return -1;
    *len = iov.iov_len;
    return 0;
}

int hk_setregset(pid_t tid, int type, const void *buf, size_t len) {
    struct iovec iov = { (void *)buf, len };
    return (int)ptrace(PTRACE_SETREGSET, tid, (void *)(long)type, &iov);
}

ssize_t hk_vm_read(pid_t pid, uint64_t remote, void *local, size_t len) {
    struct iovec l = { local, len }, r = { (void *)remote, len };
    return process_vm_readv(pid, &l, 1, &r, 1, 0);
}

ssize_t hk_vm_write(pid_t pid, uint64_t remote, const void *local, size_t len) {
    struct iovec l = { (void *)local, len }, r = { (void *)remote, len };
    return process_vm_writev(pid, &l, 1, &r, 1, 0);
}

ssize_t hk_vm_read_many(pid_t pid, const uint64_t *remote, const size_t *lens, size_t n, void *local) {
    struct iovec r[1024];
    size_t total = 0;
    if (n > 1024) { errno = EINVAL; return -1; }
    for (size_t i = 0; i < n; i++) {
        r[i].iov_base = (void *)remote[i];
        r[i].iov_len = lens[i];
        total += lens[i];
    }
    struct iovec l = { local, total };
    return process_vm_readv(pid, &l, 1, r, n, 0);
}

double hk_tsc_hz(void) {
    struct timespec a, b, d = { 0, 20 * 1000 * 1000 };
    clock_gettime(CLOCK_MONOTONIC, &a);
    uint64_t t0 = __builtin_ia32_rdtsc();
    nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    uint64_t t1 = __builtin_ia32_rdtsc();
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    return ns > 0 ? (double)(t1 - t0) * 1e9 / ns : 1e9;
}

uint64_t hk_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

int hk_has_xsavec(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(0xd, 1, &a, &b, &c, &d)) return 0;
    return (a >> 1) & 1;
}

uint32_t hk_xsave_size(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d)) return 0;
    return b;
}

volatile sig_atomic_t hk_interrupt_signal = 0;

static void hk_on_signal(int sig) { hk_interrupt_signal = sig; }

void hk_catch_signals(const int *signals) {
    struct sigaction sa = {0};
    sa.sa_handler = hk_on_signal;
    sigemptyset(&sa.sa_mask);
    for (; *signals; signals++) sigaction(*signals, &sa, NULL);
}

pid_t hk_fork_exec(const char *path, char *const argv[], char *const envp[],
                   int stdin_fd, int stdout_fd, int go_r, int go_w, int err_w) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    close(go_w);
    char go;
    ssize_t n;
    do { n = read(go_r, &go, 1); } while (n < 0 && errno == EINTR);
    if (n != 1) _exit(127);
    if (stdin_fd >= 0 && stdin_fd != 0) dup2(stdin_fd, 0);
    if (stdout_fd >= 0 && stdout_fd != 1) dup2(stdout_fd, 1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(path, argv, envp);
    int e = errno;
    while (write(err_w, &e, sizeof e) < 0 && errno == EINTR) {}
    _exit(127);
}
