import CPtrace
import Glibc

/// Separate debug files, found by build id as gdb and systemd-coredump find them:
/// `DIR/.build-id/XX/YYYYYY.debug`, where XX is the first byte of the build id in hex and
/// YYYYYY the rest. A stripped program keeps only .dynsym; its debug file (from a `-dbg` or
/// `-dbgsym` package, or `objcopy --only-keep-debug`) still has the full .symtab, at the same
/// virtual addresses, so its functions can be hooked by name.
public enum DebugFile {
    /// The debug directory: `HOOKIT_DEBUG_DIR` when set (tests, unusual layouts), else
    /// `/usr/lib/debug`, as gdb's `debug-file-directory`.
    public static var directory: String {
        if let d = getenv("HOOKIT_DEBUG_DIR"), d.pointee != 0 { return String(cString: d) }
        return "/usr/lib/debug"
    }

    /// The path of the debug file for `buildID` below `directory`, or nil for an empty id.
    public static func path(buildID: [UInt8], directory: String = DebugFile.directory) -> String? {
        guard buildID.count >= 2 else { return nil }
        let hex = buildID.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }
        return "\(directory)/.build-id/\(hex[0])/\(hex[1...].joined()).debug"
    }

    /// The readable debug file for a module whose build id it carries too: first in the
    /// tracee's own file system (`/proc/PID/root`, right for a process in a container), then
    /// in hookit's. nil when there is none.
    static func find(for module: Module) -> String? {
        guard let relative = path(buildID: module.buildID) else { return nil }
        var candidates = [relative]
        if case .file(let source) = module.source, source.hasPrefix("/proc/"),
           let pid = source.split(separator: "/").dropFirst().first, Int(pid) != nil {
            candidates.insert("/proc/\(pid)/root\(relative)", at: 0)
        }
        for candidate in candidates where access(candidate, R_OK) == 0 {
            // A debug file of another build would give wrong addresses: the ids must agree.
            if let info = try? Modules.elfInfo(.file(candidate), label: candidate),
               withUnsafeBytes(of: info.build_id, { Array($0.prefix(Int(info.build_id_len))) }) == module.buildID {
                return candidate
            }
        }
        return nil
    }
}
