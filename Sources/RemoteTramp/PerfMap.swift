import Glibc
import Injector

/// /tmp/perf-PID.map, the file `perf report` reads to name code in anonymous memory (the seed's
/// bpf_image_ksym_add/del): one line per live trampoline image and relocated prologue,
/// "START SIZE hookit_trampoline_<function>_<n>". Lines of others (a JIT in the tracee writing
/// its own map) are kept.
///
/// Safety: the file sits in a world-writable directory, so it is never opened for writing: the
/// new content goes to a fresh file created with O_EXCL and is renamed over the map, which
/// replaces a planted symlink instead of following it. The old content is read with O_NOFOLLOW.
struct PerfMap {
    let path: String
    static let prefix = "hookit_"

    init(pid: pid_t) { path = "/tmp/perf-\(pid).map" }

    /// Rewrites hookit's lines; `entries` empty removes them (and the file, if nothing else is left).
    func write(_ entries: [(start: UInt64, size: Int, name: String)]) {
        var lines = Self.read(path).filter { line in
            let fields = line.split(separator: " ")
            return !(fields.count >= 3 && fields[2].hasPrefix(Self.prefix))
        }
        lines += entries.map { "\(String($0.start, radix: 16)) \(String($0.size, radix: 16)) \($0.name)" }
        if lines.isEmpty {
            var st = stat()
            if lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == geteuid() { unlink(path) }
            return
        }
        let text = lines.joined(separator: "\n") + "\n"
        var template = Array("/tmp/.hookit-perf-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }   // O_EXCL, 0600
        guard fd >= 0 else { return }
        let tmp = String(cString: template)
        fchmod(fd, 0o644)
        let ok = text.withCString { Glibc.write(fd, $0, strlen($0)) } == text.utf8.count
        close(fd)
        if !ok || rename(tmp, path) != 0 { unlink(tmp) }
    }

    private static func read(_ path: String) -> [String] {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return [] }
        var out = [UInt8](), buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[..<n]
        }
        return String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}
