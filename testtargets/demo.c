// The bundled demo service: three worker threads handle a "request" every 100 ms each (price an
// order, checksum its name), check every answer against an independent computation, and the
// main thread prints a summary every second — so hooks on its functions have something to
// show, and the demo can tell whether hooking ever changed an answer.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_long requests, wrong;

__attribute__((noinline, used)) long demo_price(long item, long qty) { return (item * 7 + 3) * qty; }

__attribute__((noinline, used)) int demo_checksum(const char *s) {
    int h = 0;
    for (size_t i = 0; i < strlen(s); i++) h = h * 31 + s[i];
    return h;
}

__attribute__((noinline, used)) long demo_handle(long id) {
    atomic_fetch_add(&requests, 1);
    char buf[32];
    snprintf(buf, sizeof buf, "order-%ld", id);
    return demo_price(id % 10, 2) + (demo_checksum(buf) & 0xff);
}

// The same answer without calling any demo function (volatile: never folded into a call).
static long expected(long id) {
    char buf[32];
    snprintf(buf, sizeof buf, "order-%ld", id);
    volatile int h = 0;
    for (size_t i = 0; buf[i]; i++) h = h * 31 + buf[i];
    return ((id % 10) * 7 + 3) * 2 + (h & 0xff);
}

static void *worker(void *arg) {
    long id = (long)arg;
    for (;;) {
        if (demo_handle(id) != expected(id)) atomic_fetch_add(&wrong, 1);
        id++;
        usleep(100000);
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void *)(i * 1000));
    for (;;) {
        sleep(1);
        printf("demo: %ld requests served, %ld wrong answers\n", atomic_load(&requests), atomic_load(&wrong));
    }
}
