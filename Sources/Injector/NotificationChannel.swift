import Glibc

/// A socket pair between the tracee and hookit: code hookit put in the tracee tells hookit of
/// an event and waits for its answer (see HookitRuntime/loader.c). One end is the tracee's
/// descriptor; hookit holds a duplicate of the other (pidfd_getfd), so that when hookit dies the
/// kernel closes it and the tracee's side sees EOF or EPIPE instead of waiting for ever.
public struct NotificationChannel {
    /// The descriptor in the tracee (close-on-exec: an exec'ed image does not inherit it).
    public let traceeFD: Int32
    /// hookit's end, non-blocking.
    public let fd: Int32

    static let afUnix: UInt64 = 1
    static let seqPacket: UInt64 = 5
    static let cloexec: UInt64 = 0o2000000
    static let socketpairNumber = 53
    typealias PidfdOpen = @convention(c) (pid_t, UInt32) -> Int32
    typealias PidfdGetfd = @convention(c) (Int32, Int32, UInt32) -> Int32

    /// glibc's own wrappers (2.36+), looked up at run time: Swift's Glibc module does not import
    /// <sys/pidfd.h>, and `syscall` is variadic.
    static func libc<F>(_ name: String, _ type: F.Type) -> F? {
        guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(p, to: type)
    }

    /// Creates the pair in the tracee (a remote socketpair), takes one end into hookit and closes
    /// it in the tracee. On failure nothing stays open in either process.
    public static func open(in tracee: Tracee) throws -> NotificationChannel {
        let pair = try tracee.withScratch(bytes: [UInt8](repeating: 0, count: 8)) { addr -> [Int32] in
            _ = try tracee.checkedSyscall("socketpair", socketpairNumber, afUnix, seqPacket | cloexec, 0, addr)
            let b = try tracee.memory.read(at: addr, count: 8)
            return b.withUnsafeBytes { raw in [raw.load(fromByteOffset: 0, as: Int32.self), raw.load(fromByteOffset: 4, as: Int32.self)] }
        }
        var ours: Int32 = -1
        defer { try? tracee.close(fd: pair[1]) }
        if let open = Self.libc("pidfd_open", PidfdOpen.self), let getfd = Self.libc("pidfd_getfd", PidfdGetfd.self) {
            let pidfd = open(tracee.pid, 0)
            if pidfd >= 0 {
                ours = getfd(pidfd, pair[1], 0)
                Glibc.close(pidfd)
            }
        }
        guard ours >= 0 else {
            let e = errno
            try? tracee.close(fd: pair[0])
            throw InjectorError.remoteSyscallFailed(name: "pidfd_getfd", tid: tracee.pid, errno: e)
        }
        _ = fcntl(ours, F_SETFD, FD_CLOEXEC)
        _ = fcntl(ours, F_SETFL, fcntl(ours, F_GETFL) | O_NONBLOCK)
        return NotificationChannel(traceeFD: pair[0], fd: ours)
    }

    /// The next message: the 4-byte thread id the tracee sent; nil when none is waiting.
    public func receive() -> pid_t? {
        var tid: Int32 = 0
        let n = Glibc.recv(fd, &tid, 4, Int32(MSG_DONTWAIT))
        return n == 4 ? tid : nil
    }

    /// The answer that lets thread `tid` go on.
    public func answer(_ tid: pid_t) {
        var t = tid
        _ = Glibc.send(fd, &t, 4, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
    }

    /// Closes both ends (the tracee's through a remote close, when it is still there).
    public func close(in tracee: Tracee?) {
        if let t = tracee, !t.exited { try? t.close(fd: traceeFD) }
        Glibc.close(fd)
    }
}
