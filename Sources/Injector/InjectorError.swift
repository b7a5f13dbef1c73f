import CPtrace
import Glibc

/// Every way Injector can fail, each naming what failed, where, and what the user can do.
/// The tracee is left as it was whenever one of these is thrown.
public enum InjectorError: Error, Equatable, CustomStringConvertible {
    case noSuchProcess(pid: Int32)
    case isSelf(pid: Int32)
    case kernelThread(pid: Int32)
    case notX86_64(pid: Int32, detail: String)
    case alreadyTraced(pid: Int32, tracer: Int32, tracerName: String)
    case permissionDenied(pid: Int32, operation: String, hint: String)
    case processExited(pid: Int32)
    case ptraceFailed(request: String, tid: Int32, errno: Int32)
    case threadDidNotStop(tid: Int32, state: String)
    case memoryRead(address: UInt64, length: Int, errno: Int32)
    case memoryWrite(address: UInt64, length: Int, errno: Int32)
    case elf(path: String, detail: String)
    case proc(path: String, errno: Int32)
    case noModule(pattern: String, available: [String])
    case noSymbol(pattern: String)
    case noStubSpace(pid: Int32)
    case remoteSyscallFailed(name: String, tid: Int32, errno: Int32)
    case remoteCallTimedOut(function: String, tid: Int32, seconds: Double)
    case remoteCallInterrupted(function: String, tid: Int32)
    case remoteThreadDied(tid: Int32, detail: String)
    case missingFunction(name: String, detail: String)
    case libraryPath(path: String, detail: String)
    case dlopenFailed(path: String, dlerror: String)
    case interrupted(signal: Int32)
    case sharedMemory(path: String, errno: Int32)
    case execFailed(command: String, errno: Int32)
    case noMain(command: String, path: String)
    case exitedBeforeMain(command: String, status: Int32)
    case execedBeforeMain(command: String, path: String)
    case notStarted(pid: Int32, function: String)
    case preloadFailed(path: String, detail: String)
    case preloadInterposes(path: String, symbol: String, module: String)

    public var description: String {
        switch self {
        case .noSuchProcess(let pid):
            return "no process with PID \(pid) (it may have exited)"
        case .isSelf(let pid):
            return "PID \(pid) is hookit itself; a process cannot trace itself"
        case .kernelThread(let pid):
            return "PID \(pid) is a kernel thread: it has no user-space code to hook"
        case .notX86_64(let pid, let detail):
            return "PID \(pid) is not an x86-64 process (\(detail)); hookit hooks x86-64 processes only"
        case .alreadyTraced(let pid, let tracer, let name):
            return "PID \(pid) is already traced by PID \(tracer) (\(name)); detach that tracer (debugger, strace, ...) first"
        case .permissionDenied(let pid, let op, let hint):
            return "permission denied to \(op) PID \(pid): \(hint)"
        case .processExited(let pid):
            return "PID \(pid) exited while hookit was working on it"
        case .ptraceFailed(let req, let tid, let e):
            return "\(req) on thread \(tid) failed: \(errnoText(e))"
        case .threadDidNotStop(let tid, let state):
            return "thread \(tid) did not stop when interrupted (state \(state))"
        case .memoryRead(let a, let n, let e):
            return "cannot read \(n) bytes at 0x\(hex(a)) in the tracee: \(errnoText(e))"
        case .memoryWrite(let a, let n, let e):
            return "cannot write \(n) bytes at 0x\(hex(a)) in the tracee: \(errnoText(e))"
        case .elf(let path, let detail):
            return "cannot read ELF file \(path): \(detail)"
        case .proc(let path, let e):
            return "cannot read \(path): \(errnoText(e))"
        case .noModule(let pattern, let available):
            let some = available.prefix(12).joined(separator: ", ")
            return "no module matches '\(pattern)'; loaded modules: \(some)\(available.count > 12 ? ", ..." : "")"
        case .noSymbol(let pattern):
            return "no function matches '\(pattern)'"
        case .noStubSpace(let pid):
            return "found no unused executable bytes in PID \(pid) to run the remote stub from"
        case .remoteSyscallFailed(let name, let tid, let e):
            return "remote \(name) on thread \(tid) failed: \(errnoText(e))"
        case .remoteCallTimedOut(let f, let tid, let s):
            return "remote call to \(f) on thread \(tid) did not return within \(s) s; the thread will restore itself when the call returns"
        case .remoteCallInterrupted(let f, let tid):
            return "remote call to \(f) on thread \(tid) was interrupted; the thread will restore itself when the call returns"
        case .remoteThreadDied(let tid, let detail):
            return "thread \(tid) died during a remote operation: \(detail)"
        case .missingFunction(let name, let detail):
            return "the tracee has no \(name): \(detail)"
        case .libraryPath(let path, let detail):
            return "cannot load \(path): \(detail)"
        case .dlopenFailed(let path, let msg):
            return "dlopen(\(path)) failed in the tracee: \(msg)"
        case .interrupted(let sig):
            return "interrupted by signal \(sig); detached"
        case .sharedMemory(let path, let e):
            return "cannot map the tracee's shared memory \(path) into hookit: \(errnoText(e))"
        case .execFailed(let command, let e):
            return "cannot execute \(command): \(errnoText(e))"
        case .noMain(let command, let path):
            return "\(command): \(path) has no 'main' symbol (stripped, or not a C-style program), so hookit cannot tell when it reaches main; start it on its own and attach to its PID"
        case .exitedBeforeMain(let command, let status):
            let how = hk_wifsignaled(status) != 0 ? "was killed by signal \(hk_wtermsig(status))" : "exited with status \(hk_wexitstatus(status))"
            return "\(command) \(how) before reaching main"
        case .execedBeforeMain(let command, let path):
            return "\(command) executed another program (\(path)) before reaching main; start that program itself instead"
        case .notStarted(let pid, let function):
            return "PID \(pid) is held before its first instruction and its libc has not started: \(function) cannot be called in it (hookit run preloads the libraries it needs instead)"
        case .preloadFailed(let path, let detail):
            return "cannot preload \(path) into the program: \(detail)"
        case .preloadInterposes(let path, let symbol, let module):
            return "\(path) defines \(symbol), as \(module) does: preloaded (hookit run loads program libraries before the program's own), it would take the place of \(module)'s \(symbol) for every caller; rename that symbol, or make it static"
        }
    }
}

func errnoText(_ e: Int32) -> String {
    "\(String(cString: strerror(e))) (errno \(e))"
}

func hex(_ v: UInt64) -> String { String(v, radix: 16) }
