// A library whose constructor takes 2 seconds: dlopen outlives hookit's patience, so tests can
// interrupt or time out hookit mid-call and check the tracee finishes on its own.
#include <unistd.h>

static int ready;

__attribute__((constructor)) static void slow_init(void) {
    sleep(2);
    ready = 1;
}

long plugin_answer(long x) { return ready ? 4200 + x : -1; }
