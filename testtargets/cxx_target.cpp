// cxxtarget: C++ exceptions through hooked functions, and C++ names (a class method, a
// namespace function, an overloaded pair) to hook by their demangled names. Same protocol as
// target.c: prints "ready PID", then answers exactly one line per command read on stdin.
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

// Three frames between the catch and the throw: relay2 -> relay -> thrower.
HOOKABLE long relay2(long x) { return relay(x) + 1; }

}  // extern "C"

// C++ names, hooked by their demangled names (`shop::Server::handle`, `shop::area(long)`). Each
// function counts its own calls: what a hook's count must equal exactly.
namespace shop {

std::atomic<long> handle_calls, parse_calls, area1_calls, area2_calls;

class Server {
public:
    explicit Server(long base) : base_(base) {}
    HOOKABLE long handle(long request);

private:
    long base_;
};

long Server::handle(long request) {
    handle_calls.fetch_add(1);
    return base_ + request;
}

HOOKABLE long parse(const char *text) {
    parse_calls.fetch_add(1);
    return std::strtol(text, nullptr, 0);
}

// An overloaded pair: `shop::area` matches both, `shop::area(long)` one.
HOOKABLE long area(long side) {
    area1_calls.fetch_add(1);
    return side * side;
}

HOOKABLE long area(long width, long height) {
    area2_calls.fetch_add(1);
    return width * height;
}

}  // namespace shop

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
        } else if (!std::strcmp(cmd, "handle")) {      // handle K: K calls of Server::handle(i)
            static shop::Server server(100);
            long sum = 0;
            for (long i = 0; i < a; i++) sum += server.handle(i);
            std::printf("%ld\n", sum);
        } else if (!std::strcmp(cmd, "parse")) {       // parse K: K calls of shop::parse("7")
            long sum = 0;
            for (long i = 0; i < a; i++) sum += shop::parse("7");
            std::printf("%ld\n", sum);
        } else if (!std::strcmp(cmd, "area")) {        // area K J: K calls of area(i), J of area(i, 2)
            long sum = 0;
            for (long i = 0; i < a; i++) sum += shop::area(i);
            for (long i = 0; i < b; i++) sum += shop::area(i, 2);
            std::printf("%ld\n", sum);
        } else if (!std::strcmp(cmd, "cxxcalls")) {
            std::printf("handle=%ld parse=%ld area1=%ld area2=%ld\n", shop::handle_calls.load(), shop::parse_calls.load(),
                        shop::area1_calls.load(), shop::area2_calls.load());
        } else if (!std::strcmp(cmd, "throw") || !std::strcmp(cmd, "relay") || !std::strcmp(cmd, "relay2")) {
            try {
                long r = cmd[0] == 't' ? thrower(a) : cmd[5] == '2' ? relay2(a) : relay(a);
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
