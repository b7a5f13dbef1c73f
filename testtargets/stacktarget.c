// stacktarget: call stacks to unwind (--stack, --by stack). Built as a PIE without frame pointers
// (-O2 -fomit-frame-pointer), so its stacks can only be unwound from .eh_frame. Prints
// "ready PID", then answers one line per command:
//   a N     outer_a -> middle_a -> leaf, N times; answers how many leaf calls path a made so far
//   b N     outer_b -> middle_b -> leaf, the same for path b
//   deep N  N nested calls of `deep`, each with a 512-byte frame, then leaf: deeper than the
//           stack copy; answers N
//   thread N  path a, N times, on a new thread (its stack is below its thread pointer); answers N
//   total   leaf's calls so far
// The functions are noinline and noipa (no clone, no tail call of a known result), and each does
// work after its call, so every caller keeps its frame.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOOKABLE __attribute__((noinline, noipa, used))

long leaf_calls, path_a, path_b;

HOOKABLE long leaf(long x) {
    leaf_calls++;
    return x + 1;
}

HOOKABLE long middle_a(long n) {
    long s = 0;
    for (long i = 0; i < n; i++) { s += leaf(i); path_a++; }
    return s * 3;
}

HOOKABLE long outer_a(long n) { return middle_a(n) + 7; }

HOOKABLE long middle_b(long n) {
    volatile char pad[96];              // a frame of its own size: CFA = rsp + something
    long s = 0;
    for (long i = 0; i < n; i++) { pad[i % 96] = (char)i; s += leaf(pad[i % 96]); path_b++; }
    return s * 5;
}

HOOKABLE long outer_b(long n) { return middle_b(n) + 11; }

HOOKABLE long deep(long n) {
    volatile char frame[512];
    frame[n % 512] = (char)n;
    long r = n > 0 ? deep(n - 1) : leaf(frame[0]);
    return r + frame[n % 512];
}

HOOKABLE void *on_thread(void *n) { return (void *)(outer_a((long)n) + 1); }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", getpid());
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32];
        long n = 0;
        if (sscanf(line, "%31s %ld", cmd, &n) < 1) continue;
        if (!strcmp(cmd, "a")) { outer_a(n); printf("%ld\n", path_a); }
        else if (!strcmp(cmd, "b")) { outer_b(n); printf("%ld\n", path_b); }
        else if (!strcmp(cmd, "deep")) { deep(n); printf("%ld\n", n); }
        else if (!strcmp(cmd, "thread")) {
            pthread_t t;
            pthread_create(&t, NULL, on_thread, (void *)n);
            pthread_join(t, NULL);
            printf("%ld\n", n);
        }
        else if (!strcmp(cmd, "total")) printf("%ld\n", leaf_calls);
        else printf("unknown %s\n", cmd);
    }
    return 0;
}
