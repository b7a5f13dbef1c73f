import Glibc

/// Memory mapped in both the tracee and hookit: a memfd the tracee creates and maps shared;
/// hookit maps the same file through /proc/PID/fd (which also crosses mount namespaces). The
/// tracee's threads write with plain stores and atomics; hookit reads with loads — no system
/// call per read, and what was written stays readable after the tracee exits.
///
/// A child the tracee forks inherits the mapping (MAP_SHARED): its writes land here too.
public final class SharedMemory {
    public let remote: UInt64
    public let local: UnsafeMutableRawPointer
    public let length: Int
    private var remoteMapped = true

    /// Creates `length` zeroed bytes. Needs the world stopped. The tracee keeps no descriptor.
    public init(tracee: Tracee, length: Int, name: String) throws {
        let fd = try tracee.memfdCreate(name: name)
        var remoteAddress: UInt64 = 0
        do {
            _ = try tracee.checkedSyscall("ftruncate", SyscallNumber.ftruncate, UInt64(fd), UInt64(length))
            remoteAddress = try tracee.mmap(length: UInt64(length), protection: PROT_READ | PROT_WRITE, flags: MAP_SHARED, fd: fd)
            let path = "/proc/\(tracee.pid)/fd/\(fd)"
            let localFD = open(path, O_RDWR | O_CLOEXEC)
            guard localFD >= 0 else { throw InjectorError.sharedMemory(path: path, errno: errno) }
            defer { Glibc.close(localFD) }
            guard let p = Glibc.mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, localFD, 0), p != MAP_FAILED else {
                throw InjectorError.sharedMemory(path: path, errno: errno)
            }
            local = p
        } catch {
            if remoteAddress != 0 { try? tracee.munmap(address: remoteAddress, length: UInt64(length)) }
            try? tracee.close(fd: fd)
            throw error
        }
        try? tracee.close(fd: fd)       // the mapping keeps the file alive
        remote = remoteAddress
        self.length = length
    }

    /// Removes the tracee's mapping (hookit's stays until this object goes). Needs the world
    /// stopped, and no thread of the tracee may still use the memory.
    public func unmapRemote(tracee: Tracee) throws {
        guard remoteMapped else { return }
        try tracee.munmap(address: remote, length: UInt64(length))
        remoteMapped = false
    }

    public func load(_ offset: Int) -> UInt64 {
        (local + offset).assumingMemoryBound(to: UInt64.self).pointee
    }

    deinit { munmap(local, length) }
}
