// A command-driven target: reads one command per line on stdin, answers one line on stdout.
// Between commands its main thread sits blocked in read(2), which is what remote syscalls
// must cope with. Built PIE, non-PIE, static and stripped from this one source.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef STATIC_BUILD
#include <dlfcn.h>
#endif

static atomic_long usr1_count, rt_count, add_calls, threads_made;
static atomic_int churn_on, workers_on;

__attribute__((noinline, used)) int add(int a, int b) {
    atomic_fetch_add(&add_calls, 1);
    return a + b;
}

__attribute__((noinline, used)) long mul3(long a, long b, long c) { return a * b * c; }

// Six integer arguments: checks every argument register of a remote call.
__attribute__((noinline, used)) long weigh6(long a, long b, long c, long d, long e, long f) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

// Touches SSE registers and checks the stack is 16-byte aligned, as the ABI promises callees.
__attribute__((noinline, used)) long aligned_sse(long x) {
    // With frame pointers, rbp = entry rsp - 8, and the ABI wants entry rsp = 8 (mod 16).
    long fp = (long)__builtin_frame_address(0);
    volatile double d = (double)x * 1.5;
    return (fp % 16 == 0) ? (long)(d * 2) : -1;
}

// A lock another thread can hold for a while: a remote call to with_lock only returns if the
// tracee's other threads keep running during the call.
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int lock_held;

__attribute__((noinline, used)) long with_lock(long x) {
    pthread_mutex_lock(&big_lock);
    long r = x + 1;
    pthread_mutex_unlock(&big_lock);
    return r;
}

static void *holder(void *arg) {
    pthread_mutex_lock(&big_lock);
    atomic_store(&lock_held, 1);
    usleep((useconds_t)(long)arg * 1000);
    pthread_mutex_unlock(&big_lock);
    return NULL;
}

// Returns only after ms milliseconds: a remote call that outlives hookit's timeout.
__attribute__((noinline, used)) long slow(long ms) {
    usleep((useconds_t)ms * 1000);
    return ms;
}

static void on_usr1(int s) { (void)s; atomic_fetch_add(&usr1_count, 1); }
static void on_rt(int s) { (void)s; atomic_fetch_add(&rt_count, 1); }

static void *worker(void *arg) {
    (void)arg;
    volatile double x = 1;
    while (atomic_load(&workers_on)) {
        for (int i = 0; i < 1000; i++) x = x * 1.0000001 + add(i, 1) * 0.0;
        usleep(100);
    }
    return NULL;
}

static void *short_lived(void *arg) { (void)arg; return NULL; }

// Spawns and joins threads as fast as it can: seize must never miss one nor hang.
static void *churner(void *arg) {
    (void)arg;
    while (atomic_load(&churn_on)) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, short_lived, NULL);
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
        atomic_fetch_add(&threads_made, 4);
    }
    return NULL;
}

static pthread_t workers[256];
static int nworkers;
static pthread_t churners[8];
static int nchurners;

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGUSR1, on_usr1);
    signal(SIGRTMIN, on_rt);
    char line[512];
    printf("ready %d\n", getpid());
    while (fgets(line, sizeof line, stdin)) {
        char cmd[64] = {0};
        long a = 0, b = 0;
        int n = sscanf(line, "%63s %ld %ld", cmd, &a, &b);
        if (n < 1) continue;
        if (!strcmp(cmd, "ping")) {
            printf("pong\n");
        } else if (!strcmp(cmd, "add")) {
            printf("%d\n", add((int)a, (int)b));
        } else if (!strcmp(cmd, "calls")) {
            printf("%ld\n", atomic_load(&add_calls));
        } else if (!strcmp(cmd, "pid")) {
            printf("%d\n", getpid());
        } else if (!strcmp(cmd, "usr1")) {
            printf("%ld\n", atomic_load(&usr1_count));
        } else if (!strcmp(cmd, "rt")) {
            printf("%ld\n", atomic_load(&rt_count));
        } else if (!strcmp(cmd, "strlen")) {
            size_t (*volatile p)(const char *) = strlen;
            printf("%p %zu\n", (void *)p, p("hookit"));
        } else if (!strcmp(cmd, "threads")) {
            atomic_store(&workers_on, 1);
            for (long i = 0; i < a && nworkers < 256; i++) pthread_create(&workers[nworkers++], NULL, worker, NULL);
            printf("threads %d\n", nworkers);
        } else if (!strcmp(cmd, "churn")) {
            atomic_store(&churn_on, 1);
            for (long i = 0; i < (a ? a : 1) && nchurners < 8; i++) pthread_create(&churners[nchurners++], NULL, churner, NULL);
            printf("churning %d\n", nchurners);
        } else if (!strcmp(cmd, "quiet")) {
            atomic_store(&churn_on, 0);
            atomic_store(&workers_on, 0);
            for (int i = 0; i < nchurners; i++) pthread_join(churners[i], NULL);
            for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
            nchurners = nworkers = 0;
            printf("made %ld\n", atomic_load(&threads_made));
        } else if (!strcmp(cmd, "plugin")) {
#ifndef STATIC_BUILD
            long (*fn)(long) = (long (*)(long))dlsym(RTLD_DEFAULT, "plugin_answer");
            if (fn) printf("%ld\n", fn(a)); else printf("missing\n");
#else
            printf("missing\n");
#endif
        } else if (!strcmp(cmd, "maps")) {
            // Does the tracee itself see a mapping at this address? (answers "mapped" or "unmapped")
            char path[64], l[512];
            snprintf(path, sizeof path, "/proc/self/maps");
            FILE *f = fopen(path, "r");
            int found = 0;
            unsigned long want = (unsigned long)a;
            while (f && fgets(l, sizeof l, f)) {
                unsigned long s, e;
                if (sscanf(l, "%lx-%lx", &s, &e) == 2 && want >= s && want < e) found = 1;
            }
            if (f) fclose(f);
            printf("%s\n", found ? "mapped" : "unmapped");
        } else if (!strcmp(cmd, "addr")) {
            int (*volatile p)(int, int) = add;
            printf("%p\n", (void *)p);
        } else if (!strcmp(cmd, "hold")) {
            pthread_t t;
            pthread_create(&t, NULL, holder, (void *)a);
            pthread_detach(t);
            while (!atomic_load(&lock_held)) usleep(100);
            atomic_store(&lock_held, 0);
            printf("held\n");
        } else if (!strcmp(cmd, "exit")) {
            printf("bye\n");
            return 0;
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
