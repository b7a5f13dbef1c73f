import Glibc

/// Paths of the repository, the built test targets and the hookit binary.
public enum Repo {
    public static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)   // Tests/TestSupport/TargetProcess.swift
        return parts.joined(separator: "/")
    }()

    public static func target(_ name: String) -> String { "\(root)/testtargets/build/\(name)" }

    /// The hookit executable built beside the test bundle.
    public static var hookit: String {
        for dir in [".build/debug", ".build/release"] {
            let p = "\(root)/\(dir)/hookit"
            if access(p, X_OK) == 0 { return p }
        }
        return "\(root)/.build/debug/hookit"
    }

    nonisolated(unsafe) private static var built = false

    /// Builds testtargets/ once per test run (make is incremental).
    public static func buildTargets() {
        if built { return }
        // A target that dies must fail the test that killed it, not the whole run by SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let r = runProgram(["/usr/bin/make", "-s", "-C", "\(root)/testtargets"])
        precondition(r.status == 0, "building testtargets failed:\n\(r.output)")
        built = true
    }
}

/// A target process spawned from testtargets/, talked to over its stdin and stdout.
public final class TargetProcess {
    public let pid: pid_t
    private let stdinFD: Int32
    private let stdoutFD: Int32
    private var buffer: [UInt8] = []
    private var reaped = false
    private var stdinClosed = false
    public private(set) var exitStatus: Int32?

    /// Starts `testtargets/build/NAME` and waits for its "ready" line.
    public convenience init(_ name: String, arguments: [String] = [], waitForReady: Bool = true) throws {
        Repo.buildTargets()
        try self.init(path: Repo.target(name), arguments: arguments, waitForReady: waitForReady)
    }

    /// Starts any program with its stdin and stdout on pipes (hookit itself, in session tests).
    public init(path: String, arguments: [String] = [], waitForReady: Bool = false) throws {
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0]
        cloexecPipe(&inPipe)
        cloexecPipe(&outPipe)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, path, &actions, nil, argv, environ)
        close(inPipe[0]); close(outPipe[1])
        guard rc == 0 else { throw TestError("spawn \(path): \(String(cString: strerror(rc)))") }
        pid = child
        stdinFD = inPipe[1]
        stdoutFD = outPipe[0]
        if waitForReady {
            let line = try readLine(timeout: 10)
            guard line.hasPrefix("ready") else { throw TestError("target said '\(line)' instead of ready") }
        }
    }

    deinit {
        kill()
        if !stdinClosed { close(stdinFD) }
        close(stdoutFD)
    }

    /// Sends one command and returns the one-line answer.
    @discardableResult
    public func send(_ command: String, timeout: Double = 10) throws -> String {
        try write(command)
        return try readLine(timeout: timeout)
    }

    /// Writes one line to the process's stdin.
    public func write(_ command: String) throws {
        let bytes = Array((command + "\n").utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(stdinFD, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw TestError("write to target failed: \(String(cString: strerror(errno)))") }
    }

    /// Closes the process's stdin (end of input).
    public func closeInput() { close(stdinFD); stdinClosed = true }

    /// Waits for the process to exit; its exit code (128 + signal when killed), or nil on timeout.
    public func waitExit(timeout: Double) -> Int32? {
        let deadline = now() + timeout
        while now() < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                reaped = true
                exitStatus = status
                return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            }
            usleep(10_000)
        }
        return nil
    }

    public func readLine(timeout: Double) throws -> String {
        let deadline = now() + timeout
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            let left = deadline - now()
            if left <= 0 { throw TestError("no answer from target \(pid) within \(timeout) s") }
            var pfd = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(left * 1000) + 1)
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let got = chunk.withUnsafeMutableBytes { read(stdoutFD, $0.baseAddress, $0.count) }
            if got <= 0 { throw TestError("target \(pid) closed its output (exited?)") }
            buffer += chunk[..<got]
        }
    }

    /// True while the process exists and is not a zombie.
    public var isAlive: Bool {
        if reaped { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { reaped = true; exitStatus = status; return false }
        if r < 0 && errno == ECHILD { reaped = true; return false }   // reaped by a tracer's wait
        return true
    }

    /// The scheduler state letter from /proc (R, S, T, t, Z, ...).
    public var state: String {
        guard let stat = try? String(contentsOfProc: "/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return "gone" }
        return String(stat[stat.index(close, offsetBy: 2)])
    }

    public func signal(_ sig: Int32) { Glibc.kill(pid, sig) }

    public func kill() {
        if reaped { return }
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        if waitpid(pid, &status, 0) == pid { exitStatus = status }
        reaped = true
    }
}

public struct TestError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

public func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

extension String {
    init(contentsOfProc path: String) throws {
        let fd = open(path, O_RDONLY)
        if fd < 0 { throw TestError("open \(path)") }
        defer { close(fd) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[..<n]
        }
        self = String(decoding: out, as: UTF8.self)
    }
}

/// Runs a program to completion and returns its exit status and combined output.
public func runProgram(_ argv: [String], stdin: String? = nil) -> (status: Int32, output: String, stderr: String) {
    var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0], inPipe: [Int32] = [0, 0]
    cloexecPipe(&outPipe); cloexecPipe(&errPipe); cloexecPipe(&inPipe)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
    defer { posix_spawn_file_actions_destroy(&actions) }
    let cargs = argv.map { strdup($0) } + [nil]
    defer { cargs.forEach { free($0) } }
    var child: pid_t = 0
    let rc = posix_spawn(&child, argv[0], &actions, nil, cargs, environ)
    close(outPipe[1]); close(errPipe[1]); close(inPipe[0])
    if let s = stdin { _ = s.withCString { write(inPipe[1], $0, strlen($0)) } }
    close(inPipe[1])
    if rc != 0 { close(outPipe[0]); close(errPipe[0]); return (127, "spawn failed: \(String(cString: strerror(rc)))", "") }
    var out = [UInt8](), err = [UInt8]()
    var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0), pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
    var open = 2
    var buf = [UInt8](repeating: 0, count: 65536)
    while open > 0 {
        if poll(&fds, 2, -1) < 0 { if errno == EINTR { continue }; break }
        for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
            let n = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
            if n <= 0 { close(fds[i].fd); fds[i].fd = -1; open -= 1; continue }
            if i == 0 { out += buf[..<n] } else { err += buf[..<n] }
        }
    }
    var status: Int32 = 0
    while waitpid(child, &status, 0) < 0 && errno == EINTR {}
    let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// pipe(2) with both ends close-on-exec, so spawned children get only what they are given.
func cloexecPipe(_ fds: inout [Int32]) {
    fds.withUnsafeMutableBufferPointer { _ = pipe($0.baseAddress) }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
}

/// Starts a program in the background with stdout and stderr on one pipe; returns its PID and
/// the pipe's read end.
public func spawnBackground(_ argv: [String]) -> (pid_t, Int32) {
    var fds: [Int32] = [0, 0]
    cloexecPipe(&fds)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    let cargs = argv.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    posix_spawn(&pid, argv[0], &actions, nil, cargs, environ)
    cargs.forEach { free($0) }
    posix_spawn_file_actions_destroy(&actions)
    close(fds[1])
    return (pid, fds[0])
}

/// Waits for a child and returns its exit code (128 + signal when killed).
public func waitFor(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// Reads a pipe to its end and closes it.
public func readAll(_ fd: Int32) -> String {
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buf[..<n]
    }
    close(fd)
    return String(decoding: out, as: UTF8.self)
}

/// Reads one line from a pipe, waiting up to `timeout` seconds.
public func readLine(_ fd: Int32, timeout: Double) -> String? {
    var line = [UInt8]()
    let deadline = now() + timeout
    while now() < deadline {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&pfd, 1, 50) <= 0 { continue }
        var c: UInt8 = 0
        if read(fd, &c, 1) != 1 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
        if c == 10 { return String(decoding: line, as: UTF8.self) }
        line.append(c)
    }
    return nil
}
