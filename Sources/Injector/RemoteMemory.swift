import CPtrace
import Glibc

/// The tracee's memory. Bulk reads and writes go through process_vm_readv/writev (one copy,
/// no stop needed); what those refuse — read-only code pages, PROT_NONE — goes through
/// /proc/PID/mem, which writes with FOLL_FORCE as a debugger does.
public final class RemoteMemory {
    public let pid: pid_t
    private var memFD: Int32 = -1

    public init(pid: pid_t) { self.pid = pid }

    deinit { if memFD >= 0 { close(memFD) } }

    /// After an exec: /proc/PID/mem, once opened, stays bound to the old address space.
    func reopen() {
        if memFD >= 0 { close(memFD) }
        memFD = -1
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        if count == 0 { return buf }
        let n = buf.withUnsafeMutableBytes { hk_vm_read(pid, address, $0.baseAddress, count) }
        if n == count { return buf }
        let firstErrno = n < 0 ? errno : EFAULT
        let fd = try procMem(address: address, count: count, firstErrno: firstErrno, write: false)
        let m = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, Int(bitPattern: UInt(address))) }
        if m != count { throw InjectorError.memoryRead(address: address, length: count, errno: m < 0 ? errno : EIO) }
        return buf
    }

    public func write(_ bytes: [UInt8], at address: UInt64) throws {
        if bytes.isEmpty { return }
        let n = bytes.withUnsafeBytes { hk_vm_write(pid, address, $0.baseAddress, bytes.count) }
        if n == bytes.count { return }
        try writeForced(bytes, at: address, firstErrno: n < 0 ? errno : EFAULT)
    }

    /// Writes through /proc/PID/mem even into read-only pages (code). A single pwrite of at most
    /// 8 bytes within one page lands whole (design.md, "Text pokes").
    public func writeForced(_ bytes: [UInt8], at address: UInt64, firstErrno: Int32 = 0) throws {
        let fd = try procMem(address: address, count: bytes.count, firstErrno: firstErrno, write: true)
        let m = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes.count, Int(bitPattern: UInt(address))) }
        if m != bytes.count { throw InjectorError.memoryWrite(address: address, length: bytes.count, errno: m < 0 ? errno : EIO) }
    }

    /// Many small ranges in few syscalls (vectored process_vm_readv, 1024 ranges per call);
    /// falls back to one read per range when a batch is refused.
    public func read(ranges: [(address: UInt64, count: Int)]) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(ranges.count)
        var i = 0
        while i < ranges.count {
            let batch = ranges[i..<min(i + 1024, ranges.count)]
            let total = batch.reduce(0) { $0 + $1.count }
            var buf = [UInt8](repeating: 0, count: total)
            let addrs = batch.map(\.address), lens = batch.map { $0.count }
            let n = buf.withUnsafeMutableBytes { hk_vm_read_many(pid, addrs, lens, lens.count, $0.baseAddress) }
            if n == total {
                var at = 0
                for r in batch { out.append(Array(buf[at..<at + r.count])); at += r.count }
            } else {
                for r in batch { out.append(try read(at: r.address, count: r.count)) }
            }
            i += batch.count
        }
        return out
    }

    public func readCString(at address: UInt64, max: Int = 4096) throws -> String {
        var out = [UInt8]()
        var addr = address
        while out.count < max {
            // Read up to the end of the page so an unmapped next page cannot fail the read.
            let chunk = Int(min(UInt64(max - out.count), 4096 - (addr & 4095)))
            let bytes = try read(at: addr, count: chunk)
            if let z = bytes.firstIndex(of: 0) { out.append(contentsOf: bytes[..<z]); break }
            out.append(contentsOf: bytes)
            addr += UInt64(chunk)
        }
        return String(decoding: out, as: UTF8.self)
    }

    public func readU64(at address: UInt64) throws -> UInt64 {
        let b = try read(at: address, count: 8)
        return b.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    private func procMem(address: UInt64, count: Int, firstErrno: Int32, write: Bool) throws -> Int32 {
        if memFD < 0 {
            memFD = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
            if memFD < 0 {
                let e = errno
                throw write ? InjectorError.memoryWrite(address: address, length: count, errno: e == 0 ? firstErrno : e)
                            : InjectorError.memoryRead(address: address, length: count, errno: e == 0 ? firstErrno : e)
            }
        }
        return memFD
    }
}

extension Array where Element == UInt8 {
    static func of<T>(_ value: T) -> [UInt8] {
        Swift.withUnsafeBytes(of: value) { Array($0) }
    }
}
