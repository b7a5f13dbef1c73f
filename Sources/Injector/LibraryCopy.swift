import CPtrace
import Glibc

/// A library file copied into a memfd of hookit's, edited on the way: how hookit's runtime goes
/// into a process without the libswiftCore.so dependency the Swift build gives every library
/// (preloaded by `run`, or loaded by dlopen at attach).
enum LibraryCopy {
    struct Failure: Error { let detail: String }

    /// A memfd (close-on-exec) holding `path` without the DT_NEEDED entries `withoutNeeded`.
    static func memfd(of path: String, withoutNeeded: [String]) throws -> Int32 {
        typealias MemfdCreate = @convention(c) (UnsafePointer<CChar>, UInt32) -> Int32
        guard let create = NotificationChannel.libc("memfd_create", MemfdCreate.self) else {
            throw Failure(detail: "this libc has no memfd_create")
        }
        let name = path.split(separator: "/").last.map(String.init) ?? "library"
        let memfd = create(name, 1 /* MFD_CLOEXEC */)
        guard memfd >= 0 else { throw Failure(detail: "memfd_create: \(errnoText(errno))") }
        var done = false
        defer { if !done { Glibc.close(memfd) } }
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw Failure(detail: errnoText(errno)) }
        defer { Glibc.close(input) }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(input, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw Failure(detail: errnoText(errno)) }
            if n == 0 { break }
            guard buf.withUnsafeBytes({ Glibc.write(memfd, $0.baseAddress, n) }) == n else {
                throw Failure(detail: "cannot copy it: \(errnoText(errno))")
            }
        }
        for needed in withoutNeeded where hk_elf_drop_needed_fd(memfd, needed) < 0 {
            throw Failure(detail: "cannot drop its DT_NEEDED \(needed)")
        }
        done = true
        return memfd
    }

    /// The whole contents of an open file (from offset 0).
    static func contents(_ fd: Int32) -> [UInt8]? {
        var out: [UInt8] = [], buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(out.count)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return nil }
            if n == 0 { return out }
            out += buf[..<n]
        }
    }
}
