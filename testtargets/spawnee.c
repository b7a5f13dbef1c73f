// A program for `hookit run` (Tracee.spawn): shows what happened before main. Its constructor
// writes "constructor" straight to stdout and, with SPAWNEE_RAISE set, raises SIGUSR1 at itself
// (caught and counted); SPAWNEE_EXIT=N makes it _exit(N), SPAWNEE_EXEC=PATH makes it exec PATH
// instead, so main is never reached;
// SPAWNEE_WAIT makes it wait for a line on stdin before main. main reports the constructor flag, the SIGUSR1 count and its argv, one
// line each, then waits for a line on stdin and exits with status 42 (or the number on it).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int constructed;
static volatile sig_atomic_t usr1_count;

static void on_usr1(int s) { (void)s; usr1_count++; }

__attribute__((constructor)) static void early(void) {
    constructed = 1;
    signal(SIGUSR1, on_usr1);
    if (getenv("SPAWNEE_RAISE")) raise(SIGUSR1);
    if (getenv("SPAWNEE_EXIT")) _exit(atoi(getenv("SPAWNEE_EXIT")));
    if (getenv("SPAWNEE_EXEC")) {
        char *args[] = { getenv("SPAWNEE_EXEC"), NULL };
        execv(args[0], args);
        _exit(4);
    }
    static const char msg[] = "constructor\n";
    if (write(1, msg, sizeof msg - 1) < 0) _exit(3);
    if (getenv("SPAWNEE_WAIT")) {   // blocks before main until a line (or end of input) arrives
        char c;
        while (read(0, &c, 1) == 1 && c != '\n') {}
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("main constructed=%d usr1=%d argc=%d\n", constructed, (int)usr1_count, argc);
    for (int i = 1; i < argc; i++) printf("arg[%s]\n", argv[i]);
    const char *env = getenv("SPAWNEE_ENV");
    printf("env[%s]\n", env ? env : "");
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 42;
    return atoi(line);
}
