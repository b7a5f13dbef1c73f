// `hookit run` from the first instruction (issue 17, part 2): calls made before main, by a
// constructor, an .init_array entry, a library's constructor (startup_lib.c) and by libc into
// the malloc this executable interposes. The target counts each itself and prints its counts
// at the end of main (or of its constructor, with `exit-in-constructor`), with write(2) only:
// stdio would call malloc after the count was taken.
//
//   startup [exit-in-constructor]   prints: mallocs=M before_main=B step=S lib_step=L memfds=F preload=P
//
// memfds: descriptors open on a memfd (hookit's preload copies must be closed by then).
//
// step: 3 calls from the constructor, 1 from the .init_array entry, 2 from main. lib_step:
// the library's constructor makes 4 calls. The static build (-DSTATIC_BUILD) has no library
// and interposes no malloc (libc.a's malloc cannot be replaced piecemeal).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

unsigned long step_calls, mallocs, mallocs_before_main;
static int in_main;
char *startup_kept[4];   // global: the allocations cannot be optimised away

__attribute__((noinline, noipa, used)) long startup_step(long x) {
    step_calls++;
    return x * 3 + 1;
}

#ifndef STATIC_BUILD
extern void *__libc_malloc(size_t);
extern unsigned long startup_lib_calls(void);

void *malloc(size_t n) {
    mallocs++;
    if (!in_main) mallocs_before_main++;
    return __libc_malloc(n);
}
#define LIB_CALLS() startup_lib_calls()
#else
#define LIB_CALLS() 0UL
#endif

static void report(void) {
    char line[256];
    const char *preload = getenv("LD_PRELOAD");
    int memfds = 0;
    for (int fd = 0; fd < 4096; fd++) {
        char path[32], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        memfds += len > 7 && strncmp(target, "/memfd:", 7) == 0;
    }
    int n = snprintf(line, sizeof line, "mallocs=%lu before_main=%lu step=%lu lib_step=%lu memfds=%d preload=%s\n", mallocs,
                     mallocs_before_main, step_calls, LIB_CALLS(), memfds, preload ? preload : "(unset)");
    if (write(1, line, n) != n) _exit(2);
}

__attribute__((constructor)) static void startup_constructor(int argc, char **argv) {
    long v = 1;
    for (int i = 0; i < 3; i++) v = startup_step(v);
    startup_kept[0] = strdup("made by a constructor");     // libc calls the interposed malloc
    if (argc > 1 && strcmp(argv[1], "exit-in-constructor") == 0) {
        report();
        exit(3);
    }
}

static void startup_init_array(void) { startup_step(7); }
__attribute__((section(".init_array"), used)) static void (*init_entry)(void) = startup_init_array;

int main(void) {
    in_main = 1;
    startup_step(1);
    startup_step(2);
    report();
    return 0;
}
