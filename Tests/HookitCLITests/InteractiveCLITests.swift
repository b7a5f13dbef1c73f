import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// `hookit attach PID --interactive --json`, driven through a pipe as a script would.
final class InteractiveCLITests: XCTestCase {
    private func event(_ line: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], line)
    }

    /// The next JSON line of the session (skipping nothing: every reply is one line).
    private func reply(_ hookit: TargetProcess, to command: String) throws -> [String: Any] {
        try event(try hookit.send(command, timeout: 20))
    }

    private func fileBytesMatch(_ target: TargetProcess, _ function: String) throws -> Bool {
        let r = runProgram([Repo.hookit, "symbols", "\(target.pid)", "hooktarget:\(function)"])
        let f = r.output.split(separator: " ")
        let address = UInt64(f[0].dropFirst(2), radix: 16)!, size = Int(f[1])!
        let live = try RemoteMemoryReader.read(pid: target.pid, address: address, count: size)
        let exe = try Data(contentsOf: URL(fileURLWithPath: Repo.target("hooktarget")))
        let nm = runProgram(["/usr/bin/nm", Repo.target("hooktarget")]).output
        let value = nm.split(separator: "\n").first { $0.hasSuffix(" T \(function)") }!.split(separator: " ")[0]
        let offset = Int(UInt64(value, radix: 16)!)   // PIE: vaddr == file offset for .text here
        return Array(exe[offset..<offset + size]) == live
    }

    func testAddListRemoveDetachLiveThroughAPipe() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        let attached = try event(try hookit.readLine(timeout: 20))
        XCTAssertEqual(attached["event"] as? String, "attached")
        XCTAssertEqual(attached["functions"] as? Int, 0)

        let added = try reply(hookit, to: "add --count hooktarget:add")
        XCTAssertEqual(added["event"] as? String, "added")
        XCTAssertEqual(added["functions"] as? Int, 1)
        let id = try XCTUnwrap(added["id"] as? Int)
        for i in 1...5 { XCTAssertEqual(try target.send("add \(i) 1"), "\(i + 1)") }

        let progs = Repo.target("libprogs.so")
        let second = try reply(hookit, to: "add --prog fexit:hooktarget:add=\(progs):record_exit --count hooktarget:patch5")
        XCTAssertEqual(second["functions"] as? Int, 2)
        XCTAssertEqual(try target.send("add 20 22"), "42")
        XCTAssertTrue(try target.send("progs").contains("exit_ret=42"), "the fexit program added live ran")

        let list = try reply(hookit, to: "list")
        let hooks = try XCTUnwrap(list["hooks"] as? [[String: Any]])
        XCTAssertEqual(hooks.count, 2)
        XCTAssertEqual(hooks.first { $0["id"] as? Int == id }?["calls"] as? Int, 6)

        let removed = try reply(hookit, to: "remove \(id)")
        XCTAssertEqual(removed["event"] as? String, "removed")
        XCTAssertEqual(removed["calls"] as? Int, 6)
        XCTAssertEqual(try target.send("add 1 1"), "2")

        let bad = try reply(hookit, to: "remove 99")
        XCTAssertEqual(bad["event"] as? String, "error")
        let unknown = try reply(hookit, to: "add --count hooktarget:no_such_function")
        XCTAssertEqual(unknown["event"] as? String, "error")
        XCTAssertTrue((unknown["message"] as? String)?.contains("no function matches") ?? false)

        try hookit.write("detach")
        var last: [String: Any] = [:]
        while let l = try? hookit.readLine(timeout: 20) { last = try event(l); if last["event"] as? String == "detached" { break } }
        XCTAssertEqual(last["event"] as? String, "detached")
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        XCTAssertTrue(try fileBytesMatch(target, "add"), "add's code equals the file again")
        XCTAssertTrue(try fileBytesMatch(target, "patch5"))
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    func testEndOfInputDetaches() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        _ = try hookit.readLine(timeout: 20)
        XCTAssertEqual(try reply(hookit, to: "add --count hooktarget:patch5")["event"] as? String, "added")
        hookit.closeInput()
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        XCTAssertTrue(try fileBytesMatch(target, "patch5"))
        XCTAssertEqual(try target.send("patch5 2"), "6")
    }
}

/// Reads another process's memory (process_vm_readv), for checking restored code.
enum RemoteMemoryReader {
    static func read(pid: pid_t, address: UInt64, count: Int) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        let n = buf.withUnsafeMutableBytes { hk_vm_read(pid, address, $0.baseAddress, count) }
        guard n == count else { throw TestError("process_vm_readv at 0x\(String(address, radix: 16)) failed") }
        return buf
    }
}
