// The bundled demo service: a few worker threads compute prices in a loop and the main thread
// prints a summary every second, so hooks on its functions have something to show.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_long requests;

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

static void *worker(void *arg) {
    long id = (long)arg;
    for (;;) {
        demo_handle(id++);
        usleep(1000);
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void *)(i * 1000));
    for (;;) {
        sleep(1);
        printf("demo: %ld requests served, price(3,2)=%ld\n", atomic_load(&requests), demo_price(3, 2));
    }
}
