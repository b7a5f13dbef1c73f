// endings: calls that do not return normally, for `--trace` to show how each ended. Built -O2
// with the traced functions called directly from this file (noinline, noclone, so -fipa-ra and
// the names stay). Same protocol as target.c: prints "ready PID", then one line per command.
//   jump N      N times: jump_outer -> jump_inner -> longjmp back to the command loop
//   thread      a thread runs thread_body -> leave_thread -> pthread_exit; joined
//   exit C      exit_in(C) -> exit(C)        _exit C   quick_in(C) -> _exit(C)
//   ret N       N calls of plain(i), which return
//   forkexit C  a child calls exit_in(C) (exit inside); the parent waits: "child C"
//   forkexec    a child calls exec_in(), which execs /bin/true; the parent waits: "child 0"
//   calls       every function's own count: jump_outer jump_inner thread_body leave_thread plain
#include <pthread.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRACED __attribute__((noinline, noclone, used))

static jmp_buf back;
static volatile long outer_calls, inner_calls, body_calls, leave_calls, plain_calls;

TRACED void jump_inner(long n) {
    inner_calls++;
    longjmp(back, (int)n + 1);
}

TRACED long jump_outer(long n) {
    outer_calls++;
    jump_inner(n);
    return n;           // never reached
}

TRACED long plain(long n) {
    plain_calls++;
    return n * 3;
}

TRACED void leave_thread(long v) {
    leave_calls++;
    pthread_exit((void *)v);
}

TRACED long thread_body(long v) {
    body_calls++;
    leave_thread(v + 1);
    return v;           // never reached
}

static void *thread_main(void *arg) { return (void *)thread_body((long)arg); }

TRACED void exit_in(long code) { exit((int)code); }
TRACED void quick_in(long code) { _exit((int)code); }
TRACED void exec_in(void) { execl("/bin/true", "true", (char *)0); _exit(127); }

static void wait_child(pid_t c) {
    int status = 0;
    waitpid(c, &status, 0);
    printf("child %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", getpid());
    char line[256], cmd[64];
    while (fgets(line, sizeof line, stdin)) {
        long a = 0;
        if (sscanf(line, "%63s %li", cmd, &a) < 1) continue;
        if (!strcmp(cmd, "jump")) {
            volatile long done = 0;
            setjmp(back);
            if (done < a) {
                long i = done++;
                jump_outer(i);
            }
            printf("jumped %ld\n", (long)done);
        } else if (!strcmp(cmd, "thread")) {
            pthread_t t;
            void *r = 0;
            pthread_create(&t, NULL, thread_main, (void *)a);
            pthread_join(t, &r);
            printf("joined %ld\n", (long)r);
        } else if (!strcmp(cmd, "exit")) {
            exit_in(a);
        } else if (!strcmp(cmd, "_exit")) {
            quick_in(a);
        } else if (!strcmp(cmd, "forkexit") || !strcmp(cmd, "forkexec")) {
            fflush(stdout);
            pid_t c = fork();
            if (c == 0) {
                if (cmd[4] == 'e' && cmd[5] == 'x' && cmd[6] == 'i') exit_in(a);
                exec_in();
            }
            wait_child(c);
        } else if (!strcmp(cmd, "ret")) {
            long s = 0;
            for (long i = 0; i < a; i++) s += plain(i);
            printf("%ld\n", s);
        } else if (!strcmp(cmd, "calls")) {
            printf("%ld %ld %ld %ld %ld\n", outer_calls, inner_calls, body_calls, leave_calls, plain_calls);
        } else {
            printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
