// The library build/startup links: its constructor calls a hooked function before the
// program's own constructors run, and one that calls the program's interposed malloc.
#include <string.h>

static unsigned long lib_calls;
char *startup_lib_kept;   // global: the allocation cannot be optimised away

__attribute__((noinline, noipa, used)) long startup_lib_step(long x) {
    lib_calls++;
    return x + 5;
}

unsigned long startup_lib_calls(void) { return lib_calls; }

__attribute__((constructor)) static void startup_lib_constructor(void) {
    long v = 0;
    for (int i = 0; i < 4; i++) v = startup_lib_step(v);
    startup_lib_kept = strdup("made by a library constructor");
}
