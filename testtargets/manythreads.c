// manythreads: hundreds of threads busy calling functions, for attach/hook/detach under a
// stop-the-world of every thread. Same protocol as target.c: "ready PID", then one command
// per line, one answer line each.
//
//   spawn N    starts N threads; each loops calling tick() (napping 2 ms every 32 calls)
//   burst K    every thread calls work() exactly K times; answers "burst N*K" once all did
//   ticks      calls of tick() so far (the target's own count)
//   threads    tasks in /proc/self/task
//   stop       stops and joins the threads: "stopped TICKS"
//   ping / quit
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HOOKABLE __attribute__((noinline, noipa, used))

atomic_long tick_calls, work_calls;
static atomic_int quit, generation, done;
static int burst_len;

HOOKABLE long tick(long i) {
    atomic_fetch_add_explicit(&tick_calls, 1, memory_order_relaxed);
    return i * 3 + 1;
}

HOOKABLE long work(long k) {
    atomic_fetch_add_explicit(&work_calls, 1, memory_order_relaxed);
    return k ^ 0x5a;
}

static void *thread_main(void *arg) {
    (void)arg;
    int seen = atomic_load(&generation);
    long i = 0, sink = 0;
    struct timespec nap = {0, 2000000};
    while (!atomic_load(&quit)) {
        sink += tick(i++);
        if ((i & 31) == 0) nanosleep(&nap, NULL);
        int g = atomic_load(&generation);
        if (g != seen) {
            for (int k = 0; k < burst_len; k++) sink += work(k);
            seen = g;
            atomic_fetch_add(&done, 1);
        }
    }
    return (void *)sink;
}

static int count_tasks(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", getpid());
    pthread_t *threads = NULL;
    int n = 0;
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = "";
        long a = 0;
        sscanf(line, "%31s %li", cmd, &a);
        if (!strcmp(cmd, "spawn")) {
            threads = realloc(threads, sizeof *threads * (n + a));
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 64 * 1024);
            for (long i = 0; i < a; i++) pthread_create(&threads[n++], &attr, thread_main, NULL);
            printf("spawned %d\n", n);
        } else if (!strcmp(cmd, "burst")) {
            burst_len = (int)a;
            atomic_store(&done, 0);
            atomic_fetch_add(&generation, 1);
            for (int w = 0; w < 30000 && atomic_load(&done) < n; w++) usleep(1000);
            printf("burst %ld\n", (long)atomic_load(&done) * a);
        } else if (!strcmp(cmd, "ticks")) {
            printf("%ld\n", atomic_load(&tick_calls));
        } else if (!strcmp(cmd, "works")) {
            printf("%ld\n", atomic_load(&work_calls));
        } else if (!strcmp(cmd, "threads")) {
            printf("%d\n", count_tasks());
        } else if (!strcmp(cmd, "stop")) {
            atomic_store(&quit, 1);
            for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
            n = 0;
            printf("stopped %ld\n", atomic_load(&tick_calls));
        } else if (!strcmp(cmd, "ping")) {
            printf("pong\n");
        } else if (!strcmp(cmd, "quit") || !strcmp(cmd, "exit")) {
            printf("bye\n");
            return 0;
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
