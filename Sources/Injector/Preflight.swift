import Glibc

/// Checks made before hookit touches a process, so that bad input is refused with a precise
/// reason and the tracee is never half-attached.
public enum Preflight {
    /// Proof that `check(pid:forAttach: true)` passed for `pid`: an attach given it does not
    /// check again.
    public struct Passed: Sendable { let pid: pid_t }

    @discardableResult
    public static func check(pid: pid_t, forAttach: Bool) throws -> Passed {
        if pid <= 0 || !ProcFS.exists(pid) { throw InjectorError.noSuchProcess(pid: pid) }
        if pid == getpid() { throw InjectorError.isSelf(pid: pid) }
        if let tgid = ProcFS.statusField("/proc/\(pid)/status", "Tgid"), let t = pid_t(tgid), t != pid {
            // A thread id, not a process: attach to its process instead.
            throw InjectorError.noSuchProcess(pid: pid)
        }
        if isKernelThread(pid) { throw InjectorError.kernelThread(pid: pid) }
        try checkArchitecture(pid)
        if forAttach,
           let tracer = ProcFS.statusField("/proc/\(pid)/status", "TracerPid"),
           let tp = pid_t(tracer), tp != 0 {
            throw InjectorError.alreadyTraced(pid: pid, tracer: tp, tracerName: ProcFS.comm(tp))
        }
        return Passed(pid: pid)
    }

    /// Kernel threads carry PF_KTHREAD (0x00200000) in the flags field of /proc/PID/stat.
    static func isKernelThread(_ pid: pid_t) -> Bool {
        guard let stat = try? ProcFS.read("/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] = state, ... flags is field 9 of stat, i.e. index 6 after the comm.
        guard fields.count > 6, let flags = UInt64(fields[6]) else { return false }
        return flags & 0x0020_0000 != 0
    }

    /// The executable's ELF header: class ELFCLASS64 and machine EM_X86_64 (62).
    static func checkArchitecture(_ pid: pid_t) throws {
        let path = "/proc/\(pid)/exe"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == EACCES || e == EPERM {
                throw InjectorError.permissionDenied(pid: pid, operation: "read the executable of", hint: permissionHint(pid))
            }
            throw InjectorError.proc(path: path, errno: e)
        }
        defer { close(fd) }
        guard let id = ElfIdent(fd: fd) else {
            throw InjectorError.notX86_64(pid: pid, detail: "its executable is not an ELF file")
        }
        if !id.isX86_64 {
            throw InjectorError.notX86_64(pid: pid, detail: "\(id.is64Bit ? "64-bit" : "32-bit") ELF, machine \(id.machine)")
        }
    }

    /// What a user refused by ptrace can do, from the Yama setting and who owns the process.
    public static func permissionHint(_ pid: pid_t) -> String {
        let scope = ((try? ProcFS.read("/proc/sys/kernel/yama/ptrace_scope")) ?? "").trimmingCharacters(in: "\n ")
        var owner = "another user"
        if let uids = ProcFS.statusField("/proc/\(pid)/status", "Uid"),
           let first = uids.split(whereSeparator: { $0 == "\t" || $0 == " " }).first,
           let uid = uid_t(first), let pw = getpwuid(uid) {
            owner = String(cString: pw.pointee.pw_name)
        }
        var hint = "run hookit as root (or with CAP_SYS_PTRACE)"
        if !scope.isEmpty && scope != "0" {
            hint += ", or set kernel.yama.ptrace_scope=0 (it is \(scope))"
        }
        if getuid() != 0 { hint += "; the process belongs to \(owner)" }
        return hint
    }
}

/// The identifying fields of an ELF header: class, type, machine.
struct ElfIdent {
    let is64Bit: Bool
    let type: UInt16
    let machine: UInt16

    var isX86_64: Bool { is64Bit && machine == 62 }          // EM_X86_64
    var isSharedObject: Bool { type == 3 }                     // ET_DYN

    /// nil when the file does not start with an ELF header.
    init?(fd: Int32) {
        var hdr = [UInt8](repeating: 0, count: 20)
        let n = hdr.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 20, 0) }
        guard n == 20, hdr[0] == 0x7f, hdr[1] == 0x45, hdr[2] == 0x4c, hdr[3] == 0x46 else { return nil }
        is64Bit = hdr[4] == 2
        type = UInt16(hdr[16]) | UInt16(hdr[17]) << 8
        machine = UInt16(hdr[18]) | UInt16(hdr[19]) << 8
    }
}
