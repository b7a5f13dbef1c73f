import Glibc

/// A file replaced whole or not at all: readers (node_exporter's textfile collector scrapes
/// whenever Prometheus asks) see the previous version or the next, never half of one.
///
/// The bytes go to a new temporary file in the same directory (rename is atomic only within
/// one file system), created with O_EXCL | O_NOFOLLOW so that a file or symlink someone
/// planted at that name is never written through, then renamed over the target. rename
/// replaces a symlink at the target itself rather than following it.
enum AtomicFile {
    static func write(_ bytes: [UInt8], to path: String) throws(AtomicFileError) {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        // Not ending in .prom: the textfile collector reads only *.prom, so it never sees the temp file.
        var fd: Int32 = -1
        var temp = ""
        for _ in 0..<8 {
            temp = "\(dir.isEmpty ? "" : dir)/.\(base).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
            fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            if fd >= 0 || errno != EEXIST { break }
        }
        guard fd >= 0 else { throw .create(path: temp, errno: errno) }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let e = errno
                close(fd); unlink(temp)
                throw .write(path: temp, errno: e)
            }
            written += n
        }
        close(fd)
        guard rename(temp, path) == 0 else {
            let e = errno
            unlink(temp)
            throw .rename(path: path, errno: e)
        }
    }
}

enum AtomicFileError: Error, CustomStringConvertible {
    case create(path: String, errno: Int32)
    case write(path: String, errno: Int32)
    case rename(path: String, errno: Int32)

    var description: String {
        switch self {
        case .create(let p, let e): "cannot create \(p): \(String(cString: strerror(e)))"
        case .write(let p, let e): "cannot write \(p): \(String(cString: strerror(e)))"
        case .rename(let p, let e): "cannot replace \(p): \(String(cString: strerror(e)))"
        }
    }
}
