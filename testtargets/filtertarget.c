// filtertarget: the process the --if, --by and --hist argN tests attach to. Same protocol as
// hooktarget.c: prints "ready PID", then answers each command line with one line. Each command
// calls the hookable functions in a pattern and prints what it called, as it itself counted it,
// so a test can compare hookit's filtered traces and per-key counts with the target's own.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOOKABLE __attribute__((noinline, noipa, used))

// A size and a path (a literal, a heap copy, or NULL): returns size + strlen(path).
HOOKABLE long weigh(long size, const char *path) { return size + (path ? (long)strlen(path) : 0); }

// Counted per key by --by.
HOOKABLE long pick(long key) { return key * 3; }

// Two call sites of pick, for --by caller.
HOOKABLE long from_a(long k) { return pick(k) + 1; }
HOOKABLE long from_b(long k) { return pick(k) + 2; }

// --override --if: x + 1 unless skipped.
HOOKABLE long doit(long x) { return x + 1; }

static const char *const literal_paths[] = { "/etc/passwd", "/etc/hosts", "/tmp/x" };

static int glob_etc(const char *p) { return p && !strncmp(p, "/etc/", 5); }

// mix N: N calls of weigh(size, path), size = i*37 % 2000, path cycling through three literals,
// a heap string and NULL. Prints what matched: sizes >= 1000, paths under /etc/, both, paths
// equal to /etc/hosts, returns > 1500, and (arg0 < 100 || str(arg1) == "/tmp/x") && !null.
static void mix(long n) {
    char *heap = strdup("/etc/on-the-heap");
    long big = 0, etc = 0, both = 0, hosts = 0, retbig = 0, either = 0, sum = 0;
    for (long i = 0; i < n; i++) {
        long size = i * 37 % 2000;
        const char *path = i % 5 < 3 ? literal_paths[i % 5] : i % 5 == 3 ? heap : NULL;
        long r = weigh(size, path);
        sum += r;
        big += size >= 1000;
        etc += glob_etc(path);
        both += size >= 1000 && glob_etc(path);
        hosts += path && !strcmp(path, "/etc/hosts");
        retbig += r > 1500;
        either += (size < 100 || (path && !strcmp(path, "/tmp/x"))) && path != NULL;
    }
    free(heap);
    printf("mixed %ld big %ld etc %ld both %ld hosts %ld retbig %ld either %ld\n", sum, big, etc, both, hosts, retbig, either);
}

// sizes N: the log2 histogram of mix's sizes, as `K:CALLS` for each non-empty bucket K (0: the
// value 0; K: [2^(K-1), 2^K)).
static void sizes(long n) {
    long b[65] = { 0 };
    for (long i = 0; i < n; i++) {
        unsigned long v = (unsigned long)(i * 37 % 2000);
        b[v ? 64 - __builtin_clzl(v) : 0]++;
    }
    for (int k = 0; k < 65; k++) if (b[k]) printf("%d:%ld ", k, b[k]);
    printf("\n");
}

// keys N K: N calls of pick(i*i % K); prints `KEY:CALLS` for every key called.
static void keys(long n, long k) {
    long *c = calloc((size_t)k, sizeof *c);
    for (long i = 0; i < n; i++) {
        long key = i * i % k;
        pick(key);
        c[key]++;
    }
    for (long j = 0; j < k; j++) if (c[j]) printf("%ld:%ld ", j, c[j]);
    printf("\n");
    free(c);
}

// callers A B: A calls of pick through from_a, B through from_b; prints `callers A B`.
static void callers(long a, long b) {
    for (long i = 0; i < a; i++) from_a(5);
    for (long i = 0; i < b; i++) from_b(5);
    printf("callers %ld %ld\n", a, b);
}

struct worker { long calls; pid_t tid; };

static void *work(void *arg) {
    struct worker *w = arg;
    w->tid = gettid();
    for (long i = 0; i < w->calls; i++) pick(1);
    return NULL;
}

// threads T N: thread t calls pick N*(t+1) times; prints `TID:CALLS` per thread.
static void threads(long t, long n) {
    pthread_t th[16];
    struct worker w[16];
    if (t > 16) t = 16;
    for (long i = 0; i < t; i++) {
        w[i].calls = n * (i + 1);
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (long i = 0; i < t; i++) pthread_join(th[i], NULL);
    for (long i = 0; i < t; i++) printf("%d:%ld ", w[i].tid, w[i].calls);
    printf("\n");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char line[256], cmd[64];
    printf("ready %d\n", getpid());
    while (fgets(line, sizeof line, stdin)) {
        long a = 0, b = 0;
        if (sscanf(line, "%63s %ld %ld", cmd, &a, &b) < 1) continue;
        if (!strcmp(cmd, "mix")) mix(a);
        else if (!strcmp(cmd, "sizes")) sizes(a);
        else if (!strcmp(cmd, "keys")) keys(a, b > 0 ? b : 1);
        else if (!strcmp(cmd, "callers")) callers(a, b);
        else if (!strcmp(cmd, "threads")) threads(a, b);
        else if (!strcmp(cmd, "doit")) {
            for (long x = 0; x < a; x++) printf("%ld%s", doit(x), x + 1 < a ? " " : "\n");
        } else if (!strcmp(cmd, "quit")) break;
        else printf("unknown %s\n", cmd);
    }
    return 0;
}
