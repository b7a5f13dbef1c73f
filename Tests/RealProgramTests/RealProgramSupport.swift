import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

// Helpers of the real-program tests: real daemons started in a temporary directory and
// always killed, `hookit attach --json` sessions, refusal summaries, and the check that
// detach left a library's code equal to its file.

/// A JSON event hookit printed.
typealias Event = [String: Any]

/// One `hookit attach PID --json ...` run in the background.
final class HookitSession {
    let pid: pid_t
    private let out: Int32
    private(set) var printed = ""
    private var finished = false

    /// Starts hookit and waits for its "attached" event (refused events come first).
    init(_ target: pid_t, _ args: [String], timeout: Double = 20) throws {
        (pid, out) = spawnBackground([Repo.hookit, "attach", "\(target)", "--json"] + args)
        let deadline = now() + timeout
        while now() < deadline, let line = readLine(out, timeout: deadline - now()) {
            printed += line + "\n"
            if line.contains("\"event\":\"attached\"") { return }
        }
        kill(pid, SIGKILL)
        _ = waitFor(pid)
        printed += readAll(out)
        finished = true
        throw TestError("hookit did not attach: \(printed)")
    }

    /// SIGINT (detach) and everything hookit printed; its exit status must be `expectedStatus`
    /// (1 when it had to leave an image mapped).
    @discardableResult
    func detach(expectedStatus: Int32 = 0) -> [Event] {
        if !finished {
            kill(pid, SIGINT)
            // Read before waiting (a full pipe would block hookit); a hookit that hangs is
            // killed after 30 s so the test fails instead of the whole run.
            let deadline = now() + 30
            while let line = readLine(out, timeout: max(0.1, deadline - now())) {
                printed += line + "\n"
                if now() > deadline { break }
            }
            if now() > deadline { kill(pid, SIGKILL); XCTFail("hookit did not detach within 30 s") }
            close(out)
            let status = waitFor(pid)
            finished = true
            XCTAssertEqual(status, expectedStatus, "hookit exit status; it printed:\n\(printed.suffix(2000))")
        }
        return events
    }

    var events: [Event] {
        printed.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? Event }
    }

    func event(_ name: String) -> Event? { events.first { $0["event"] as? String == name } }

    /// Calls per function name (`module:name`), summed over the function's programs.
    var calls: [String: Int] {
        var out: [String: Int] = [:]
        // Built-in counts may print interim stats (`"final":false`); only the final ones count.
        for e in events where e["event"] as? String == "stats" && (e["final"] as? Bool ?? true) {
            out[e["function"] as! String, default: 0] += e["calls"] as? Int ?? 0
        }
        return out
    }

    var refused: [(function: String, reason: String)] {
        events.filter { $0["event"] as? String == "refused" }.map { ($0["function"] as! String, $0["reason"] as! String) }
    }

    deinit {
        if !finished { kill(pid, SIGKILL); _ = waitFor(pid); close(out) }
    }
}

/// A daemon started for one test; killed (process group) when the test ends, whatever happens.
final class Daemon {
    let pid: pid_t
    let name: String
    init(_ argv: [String]) throws {
        name = argv[0]
        let devnull = open("/dev/null", O_RDWR)
        defer { close(devnull) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 { posix_spawn_file_actions_adddup2(&actions, devnull, fd) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        let cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, argv[0], &actions, &attr, cargs, environ)
        guard rc == 0 else { throw TestError("spawn \(argv[0]): \(String(cString: strerror(rc)))") }
        pid = child
    }

    var isAlive: Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    deinit {
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }
}

/// A scratch directory, removed with everything in it when the value goes away.
final class TempDir {
    let path: String
    init(_ tag: String) {
        var template = Array("/tmp/hookit-\(tag)-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        chmod(path, 0o755)
    }
    func file(_ name: String) -> String { "\(path)/\(name)" }
    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: file(name), atomically: false, encoding: .utf8)
    }
    deinit { _ = runProgram(["/bin/rm", "-rf", path]) }
}

/// A TCP port on 127.0.0.1 nobody listens on right now.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A /proc file read to its end (its size is 0 to stat, so read it in chunks).
func readProc(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY)
    if fd < 0 { throw TestError("open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buf[..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// Polls `check` every 50 ms until it is true or `timeout` seconds have passed.
func waitUntil(_ timeout: Double, _ check: () -> Bool) -> Bool {
    let deadline = now() + timeout
    while now() < deadline {
        if check() { return true }
        usleep(50_000)
    }
    return check()
}

/// Skips the test when a program it needs is not installed (scripts/install-deps.sh installs it).
func require(_ paths: String...) throws {
    for p in paths where access(p, X_OK) != 0 {
        throw XCTSkip("\(p) is not installed: run scripts/install-deps.sh as root")
    }
}

// MARK: - code versus file

/// Whether every executable mapping of the module `name` in the process holds exactly the
/// bytes of its file: what a complete detach must leave. Returns the bytes compared.
func moduleCodeEqualsFile(pid: pid_t, module name: String, file: String? = nil) throws -> Int {
    let maps = try readProc("/proc/\(pid)/maps")
    var compared = 0
    for line in maps.split(separator: "\n") {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        // `libz.so.1` names the file libz.so.1.2.13 too, as hookit's module patterns do.
        guard f.count >= 6, f[1].hasPrefix("r-x"), let base = f[5].split(separator: "/").last,
              base == name || base.hasPrefix(name + ".") else { continue }
        let range = f[0].split(separator: "-").map { UInt64($0, radix: 16)! }
        let offset = Int(f[2], radix: 16)!, size = Int(range[1] - range[0])
        var live = [UInt8](repeating: 0, count: size)
        let n = live.withUnsafeMutableBytes { hk_vm_read(pid, range[0], $0.baseAddress, size) }
        guard n == size else { throw TestError("cannot read \(name) at 0x\(String(range[0], radix: 16))") }
        // map_files names drop leading zeros (a non-PIE's 00401000 is 401000).
        let mapFile = "/proc/\(pid)/map_files/\(String(range[0], radix: 16))-\(String(range[1], radix: 16))"
        let fd = open(file ?? mapFile, O_RDONLY)
        guard fd >= 0 else { throw TestError("cannot open the file of \(name)") }
        defer { close(fd) }
        var disk = [UInt8](repeating: 0, count: size)
        let m = disk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, offset) }
        // The tail of the last page past the end of the file reads as zeros in memory.
        if m < size { for i in m..<size { disk[i] = 0 } }
        if live != disk {
            let first = live.indices.first { live[$0] != disk[$0] }!
            throw TestError("\(name) differs from its file at 0x\(String(range[0] + UInt64(first), radix: 16))")
        }
        compared += size
    }
    guard compared > 0 else { throw TestError("\(name) has no executable mapping in \(pid)") }
    return compared
}

// MARK: - refusals, per entry pattern

/// The shape of a function's first instructions that decides how its entry is patched.
enum EntryPattern: String, CaseIterable {
    case endbr64 = "endbr64 first"
    case ripRelative = "RIP-relative in the first 5 bytes"
    case shortBranch = "short jmp/jcc in the first 5 bytes"
    case call = "call in the first 5 bytes"
    case tiny = "shorter than 5 bytes"
    case plain = "plain prologue"
}

/// Classifies a function from its live bytes (read before hookit patches it).
func entryPattern(pid: pid_t, address: UInt64, size: Int) -> EntryPattern {
    var bytes = [UInt8](repeating: 0, count: 32)
    _ = bytes.withUnsafeMutableBytes { hk_vm_read(pid, address, $0.baseAddress, 32) }
    if size > 0 && size < 5 { return .tiny }
    var off = 0
    var pattern = EntryPattern.plain
    while off < 5 {
        var insn = hk_insn()
        let rc = bytes.withUnsafeBufferPointer { hk_decode_insn($0.baseAddress! + off, 32 - off, address + UInt64(off), &insn) }
        if rc != 0 { break }
        if off == 0 && insn.is_endbr64 != 0 { return .endbr64 }
        if insn.rip_relative != 0 { pattern = .ripRelative }
        else if insn.branch == UInt8(HK_BRANCH_CALL) && pattern == .plain { pattern = .call }
        else if (insn.branch == UInt8(HK_BRANCH_JMP) || insn.branch == UInt8(HK_BRANCH_JCC)) && insn.rel_size == 1 { pattern = .shortBranch }
        if insn.ends_flow != 0 && off + Int(insn.length) < 5 && pattern == .plain { pattern = .tiny }
        off += Int(insn.length)
    }
    return pattern
}

/// A refusal reason with addresses, offsets and bytes taken out, so equal reasons group.
func reasonKind(_ reason: String) -> String {
    var r = reason
    if let colon = r.range(of: " safely: ") { r = String(r[colon.upperBound...]) }
    if r.contains("already patched by something else") {
        let what = r.split(separator: "(").dropFirst().first?.split(separator: ")").first ?? ""
        return "already patched by something else (\(what))"
    }
    if r.hasPrefix("cannot relocate") {
        // "cannot relocate +3 (jmp 0x...): it branches ..." -> "cannot relocate jmp: it branches ..."
        let insn = r.split(separator: "(").dropFirst().first?.split(separator: " ").first ?? "?"
        let why = r.components(separatedBy: "): ").dropFirst().joined(separator: "): ")
        return "cannot relocate \(insn): \(why)"
    }
    return r.replacingOccurrences(of: "0x[0-9a-f]+", with: "0x…", options: .regularExpression)
}

/// Hooked and refused functions per entry pattern, with the refusal reasons; printed and returned.
@discardableResult
func refusalReport(_ title: String, pid: pid_t, pattern: String, session: HookitSession,
                   symbols: [(name: String, address: UInt64, size: Int)]) -> [EntryPattern: (hooked: Int, refused: [String: Int])] {
    let refusedNames = Dictionary(session.refused.map { ($0.function, $0.reason) }, uniquingKeysWith: { a, _ in a })
    var report: [EntryPattern: (hooked: Int, refused: [String: Int])] = [:]
    // Aliases share an address; hookit hooks (or refuses) one of them, under its own name.
    var reasonAt: [UInt64: String] = [:]
    for s in symbols { if let why = refusedNames[s.name] { reasonAt[s.address] = why } }
    var seen = Set<UInt64>()
    for s in symbols where seen.insert(s.address).inserted {
        let p = entryPattern(pid: pid, address: s.address, size: s.size)
        var row = report[p] ?? (0, [:])
        if let why = reasonAt[s.address] { row.refused[reasonKind(why), default: 0] += 1 } else { row.hooked += 1 }
        report[p] = row
    }
    var text = "\(title): refusal summary for \(pattern) (\(session.refused.count) refused)\n"
    for p in EntryPattern.allCases {
        guard let row = report[p] else { continue }
        let refused = row.refused.values.reduce(0, +)
        text += "  \(p.rawValue): \(row.hooked) hooked, \(refused) refused\n"
        for (why, n) in row.refused.sorted(by: { $0.value > $1.value }) { text += "      \(n) × \(why)\n" }
    }
    print(text, terminator: "")
    return report
}

/// `hookit symbols PID PATTERN`: (module:name, address, size) of every function it lists.
func listSymbols(_ pid: pid_t, _ pattern: String) -> [(name: String, address: UInt64, size: Int)] {
    runProgram([Repo.hookit, "symbols", "\(pid)", pattern]).output.split(separator: "\n").compactMap { line in
        let f = line.split(separator: " ", maxSplits: 3)     // a demangled NAME has spaces
        guard f.count == 4, let a = UInt64(f[0].dropFirst(2), radix: 16), let s = Int(f[1]) else { return nil }
        return ("\(f[2]):\(f[3])", a, s)
    }
}
