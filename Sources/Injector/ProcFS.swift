import Glibc

/// Reads of /proc/PID/... that Injector needs. None of these require ptrace.
public enum ProcFS {
    /// The whole text of a /proc file (they report size 0, so read until EOF).
    public static func read(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw InjectorError.proc(path: path, errno: errno) }
        defer { close(fd) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw InjectorError.proc(path: path, errno: errno)
            }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Thread ids in /proc/PID/task, or nil when the process is gone.
    public static func threads(_ pid: pid_t) -> [pid_t]? {
        guard let dir = opendir("/proc/\(pid)/task") else { return nil }
        defer { closedir(dir) }
        var tids = [pid_t]()
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if let t = pid_t(name) { tids.append(t) }
        }
        return tids
    }

    /// A "Key:\tvalue" field of /proc/PID/status (or /proc/PID/task/TID/status).
    public static func statusField(_ path: String, _ key: String) -> String? {
        guard let text = try? read(path) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return line.dropFirst(key.count + 1).trimmingCharacters(in: " \t")
        }
        return nil
    }

    /// The one-letter scheduler state of a thread (R, S, D, T, t, Z, X), or nil if gone.
    public static func threadState(_ pid: pid_t, _ tid: pid_t) -> String? {
        guard let stat = try? read("/proc/\(pid)/task/\(tid)/stat"),
              let close = stat.lastIndex(of: ")") else { return nil }
        let rest = stat[stat.index(after: close)...].split(separator: " ")
        return rest.first.map(String.init)
    }

    /// The short command name of a process.
    public static func comm(_ pid: pid_t) -> String {
        ((try? read("/proc/\(pid)/comm")) ?? "?").trimmingCharacters(in: "\n")
    }

    public static func exists(_ pid: pid_t) -> Bool {
        access("/proc/\(pid)", F_OK) == 0
    }
}

extension Substring {
    /// Drops the characters of `set` from both ends (no Foundation needed).
    public func trimmingCharacters(in set: String) -> String {
        var s = self
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

extension String {
    public func trimmingCharacters(in set: String) -> String { self[...].trimmingCharacters(in: set) }
}
