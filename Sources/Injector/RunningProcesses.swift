import Glibc

/// A process as /proc lists it, by the names a user knows it by (for `attach --name`).
public struct RunningProcess: Sendable {
    public let pid: pid_t
    /// /proc/PID/comm: the kernel's name, at most 15 characters (cut, not abbreviated).
    public let comm: String
    /// The base name of /proc/PID/exe; nil when it cannot be read (another user's process
    /// without the right to read it).
    public let executable: String?

    /// Whether a user naming the process `name` means this one: its comm or its executable's
    /// base name, or a name longer than comm holds whose first 15 characters are comm (what the
    /// kernel kept of it, when the executable cannot be read).
    public func isNamed(_ name: String) -> Bool {
        if comm == name || executable == name { return true }
        return executable == nil && name.utf8.count > Self.commLength && String(decoding: name.utf8.prefix(Self.commLength), as: UTF8.self) == comm
    }

    /// TASK_COMM_LEN - 1.
    static let commLength = 15
}

public enum RunningProcesses {
    /// Every process that could be hooked: each entry of /proc that is a process (readdir of
    /// /proc lists thread groups only, never their other threads), except hookit itself, kernel
    /// threads and zombies (nothing left to hook in them).
    public static func all() -> [RunningProcess] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var found: [RunningProcess] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard let pid = pid_t(name), pid != getpid() else { continue }
            guard let stat = try? ProcFS.read("/proc/\(pid)/stat"), let state = state(stat),
                  state != "Z" && state != "X", !Preflight.isKernelThread(pid) else { continue }
            guard let comm = try? ProcFS.read("/proc/\(pid)/comm") else { continue }
            found.append(RunningProcess(pid: pid, comm: comm.trimmingCharacters(in: "\n"), executable: executableName(pid)))
        }
        return found.sorted { $0.pid < $1.pid }
    }

    /// The processes a user naming `name` means (see RunningProcess.isNamed), by pid.
    public static func named(_ name: String) -> [RunningProcess] {
        all().filter { $0.isNamed(name) }
    }

    /// The state letter of a /proc/PID/stat line (after the parenthesised comm, which may hold
    /// spaces and parentheses itself).
    static func state(_ stat: String) -> String? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init)
    }

    /// The base name of the executable; the kernel appends " (deleted)" to a replaced one.
    static func executableName(_ pid: pid_t) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/\(pid)/exe", &buf, buf.count - 1)
        guard n > 0 else { return nil }
        var path = String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path.split(separator: "/").last.map(String.init)
    }
}
