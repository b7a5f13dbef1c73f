// cxxtarget: C++ exceptions through hooked functions. Same protocol as target.c: prints
// "ready PID", then answers exactly one line per command read on stdin.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#define HOOKABLE __attribute__((noinline, noipa, used))

extern "C" {

std::atomic<long> add_calls;

HOOKABLE long add(long a, long b) {
    add_calls.fetch_add(1);
    return a + b;
}

// Throws for negative x: the exception unwinds out of thrower (and any hook around it).
HOOKABLE long thrower(long x) {
    if (x < 0) throw std::runtime_error("negative " + std::to_string(x));
    return x * 2;
}

// One more frame between the catch and the throw: thrower(x) + 1.
HOOKABLE long relay(long x) { return thrower(x) + 1; }

}  // extern "C"

int main() {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    char line[512];
    std::printf("ready %d\n", getpid());
    while (std::fgets(line, sizeof line, stdin)) {
        char cmd[64] = {0};
        long a = 0, b = 0;
        if (std::sscanf(line, "%63s %ld %ld", cmd, &a, &b) < 1) continue;
        if (!std::strcmp(cmd, "ping")) {
            std::printf("pong\n");
        } else if (!std::strcmp(cmd, "add")) {
            std::printf("%ld\n", add(a, b));
        } else if (!std::strcmp(cmd, "calls")) {
            std::printf("%ld\n", add_calls.load());
        } else if (!std::strcmp(cmd, "throw") || !std::strcmp(cmd, "relay")) {
            try {
                long r = cmd[0] == 't' ? thrower(a) : relay(a);
                std::printf("%ld\n", r);
            } catch (const std::exception &e) {
                std::printf("caught %s\n", e.what());
            }
        } else if (!std::strcmp(cmd, "quit") || !std::strcmp(cmd, "exit")) {
            std::printf("bye\n");
            return 0;
        } else {
            std::printf("unknown %s\n", cmd);
        }
    }
    return 0;
}
