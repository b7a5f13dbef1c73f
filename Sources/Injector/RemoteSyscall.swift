import Glibc

/// Syscalls run by one borrowed thread of the tracee while the rest of the world stays stopped.
extension Tracee {
    /// Makes one stopped thread execute syscall `number` with up to six arguments and returns the
    /// raw result (negative errno on failure). With the world stopped, one of its threads is
    /// lent; otherwise one thread is stopped for it while the others run. Every register and the
    /// FP state of the thread are restored; a thread that was inside a blocking syscall goes
    /// back into it (restarted as the kernel would).
    public func syscall(_ number: Int, _ args: UInt64..., timeout: Double = 5) throws -> Int64 {
        precondition(args.count <= 6)
        let thread = held ? try pickThread() : try lendOneThread()
        let result = try runStub(on: thread, entry: .syscall, arguments: [UInt64(number)] + args,
                                 label: "syscall \(number)", timeout: timeout)
        return Int64(bitPattern: result)
    }

    /// `syscall`, with a negative result thrown as a typed error naming the call.
    func checkedSyscall(_ name: String, _ number: Int, _ args: UInt64...) throws -> UInt64 {
        precondition(args.count <= 6)
        let a = args + Array(repeating: 0, count: 6 - args.count)
        let r = try syscall(number, a[0], a[1], a[2], a[3], a[4], a[5])
        if r < 0 && r > -4096 {
            throw InjectorError.remoteSyscallFailed(name: name, tid: pid, errno: Int32(-r))
        }
        return UInt64(bitPattern: r)
    }

    /// mmap(2) in the tracee: anonymous private memory unless `fd` is given.
    public func mmap(address: UInt64 = 0, length: UInt64, protection: Int32, flags: Int32 = MAP_PRIVATE | MAP_ANONYMOUS,
                     fd: Int32 = -1, offset: UInt64 = 0) throws -> UInt64 {
        try checkedSyscall("mmap", SyscallNumber.mmap, address, length, UInt64(protection), UInt64(UInt32(bitPattern: flags)),
                           UInt64(bitPattern: Int64(fd)), offset)
    }

    public func munmap(address: UInt64, length: UInt64) throws {
        _ = try checkedSyscall("munmap", SyscallNumber.munmap, address, length)
    }

    public func mprotect(address: UInt64, length: UInt64, protection: Int32) throws {
        _ = try checkedSyscall("mprotect", SyscallNumber.mprotect, address, length, UInt64(protection))
    }

    /// memfd_create(2) in the tracee; the name is written into a scratch page first.
    public func memfdCreate(name: String, flags: UInt32 = 1 /* MFD_CLOEXEC */) throws -> Int32 {
        try withScratch(bytes: Array(name.utf8) + [0]) { addr in
            Int32(try checkedSyscall("memfd_create", SyscallNumber.memfd_create, addr, UInt64(flags)))
        }
    }

    public func close(fd: Int32) throws {
        _ = try checkedSyscall("close", SyscallNumber.close, UInt64(fd))
    }

    /// Maps a private scratch page in the tracee holding `bytes`, runs `body` with its address,
    /// and unmaps it again whatever happens.
    public func withScratch<T>(bytes: [UInt8], _ body: (UInt64) throws -> T) throws -> T {
        let length = UInt64((bytes.count + 4095) & ~4095)
        let addr = try mmap(length: max(length, 4096), protection: PROT_READ | PROT_WRITE)
        defer { try? munmap(address: addr, length: max(length, 4096)) }
        try memory.write(bytes, at: addr)
        return try body(addr)
    }
}

/// x86-64 syscall numbers hookit issues remotely.
public enum SyscallNumber {
    public static let close = 3
    public static let mmap = 9
    public static let mprotect = 10
    public static let munmap = 11
    public static let getpid = 39
    public static let ftruncate = 77
    public static let memfd_create = 319
}
