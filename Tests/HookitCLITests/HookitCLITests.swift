import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// `hookit` as a user runs it, against real targets.
final class HookitCLITests: XCTestCase {
    private func hookit(_ args: String...) -> (status: Int32, output: String, stderr: String) {
        runProgram([Repo.hookit] + args)
    }

    func testSymbolsPrintsAddressSizeModuleName() throws {
        let target = try TargetProcess("target")
        let r = hookit("symbols", "\(target.pid)", "target:add", "target:weigh6")
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.output.split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        let add = lines[0].split(separator: " ")
        XCTAssertEqual(add.count, 4)
        XCTAssertEqual(String(add[0]), try target.send("addr"), "the address the target itself uses")
        XCTAssertGreaterThan(Int(add[1]) ?? 0, 0)
        XCTAssertEqual(add[2], "target")
        XCTAssertEqual(add[3], "add")
        XCTAssertTrue(lines[1].hasSuffix(" target weigh6"))
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testSymbolsJSONHasTheSameFields() throws {
        let target = try TargetProcess("target")
        let r = hookit("symbols", "--json", "\(target.pid)", "libc.so.6:str*")
        XCTAssertEqual(r.status, 0, r.stderr)
        var names = Set<String>()
        for line in r.output.split(separator: "\n") {
            let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            XCTAssertEqual(obj["module"] as? String, "libc.so.6")
            XCTAssertTrue((obj["address"] as? String)?.hasPrefix("0x") ?? false)
            XCTAssertNotNil(obj["size"] as? Int)
            names.insert(obj["name"] as! String)
        }
        XCTAssertTrue(names.contains("strlen"))
        XCTAssertTrue(names.allSatisfy { $0.hasPrefix("str") })
    }

    func testSymbolsOfAllModulesIncludeLibcAndTheVDSO() throws {
        let target = try TargetProcess("target")
        let r = hookit("symbols", "\(target.pid)")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.output.contains(" libc.so.6 malloc\n"))
        XCTAssertTrue(r.output.contains(" linux-vdso.so.1 "))
        XCTAssertTrue(r.output.contains(" target main\n"))
    }

    func testInjectPrintsWhereTheLibraryLanded() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 4"), "threads 4")
        let lib = Repo.target("libplugin.so")
        let r = hookit("inject", "\(target.pid)", lib)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.output.hasPrefix("loaded \(lib) at 0x"), r.output)
        XCTAssertTrue(r.output.contains("world stopped"), r.output)
        let base = r.output.split(separator: " ")[3]
        let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
        XCTAssertTrue(maps.contains(base.dropFirst(2) + "-"), "the library is mapped at the printed address")
        XCTAssertEqual(try target.send("plugin 9"), "4209")
        XCTAssertEqual(try target.send("quiet"), "made 0")
    }

    func testInjectFailurePrintsTheTraceesDlerror() throws {
        let target = try TargetProcess("target")
        let r = hookit("inject", "\(target.pid)", Repo.target("libbroken.so"))
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("undefined symbol: hookit_symbol_that_does_not_exist"), r.stderr)
        XCTAssertEqual(try target.send("ping"), "pong")
        XCTAssertEqual(tracerPid(target.pid), "0")
    }

    func testSIGTERMDuringInjectDetachesAndTheTargetFinishesAlone() throws {
        let target = try TargetProcess("target")
        let (pid, out) = spawnBackground([Repo.hookit] + ["inject", "\(target.pid)", Repo.target("libslow.so")])
        usleep(500_000)                      // dlopen is now inside the 2-second constructor
        kill(pid, SIGTERM)
        let text = readAll(out)
        let status = waitFor(pid)
        XCTAssertEqual(status, 1, text)
        XCTAssertTrue(text.contains("interrupted"), text)
        XCTAssertEqual(tracerPid(target.pid), "0")
        XCTAssertEqual(try target.send("ping", timeout: 5), "pong")
        XCTAssertEqual(try target.send("plugin 3"), "4203", "the library finished loading on its own")
    }

    func testSIGKILLOfHookitMidCallLeavesARunningTarget() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 4"), "threads 4")
        let (pid, out) = spawnBackground([Repo.hookit] + ["inject", "\(target.pid)", Repo.target("libslow.so")])
        usleep(500_000)
        kill(pid, SIGKILL)
        _ = waitFor(pid)
        _ = readAll(out)
        XCTAssertEqual(try target.send("ping", timeout: 5), "pong", "the stub restored the thread without hookit")
        XCTAssertEqual(try target.send("plugin 4"), "4204")
        XCTAssertEqual(try target.send("add 5 6"), "11")
        XCTAssertEqual(tracerPid(target.pid), "0")
    }

    func testBadInputGetsClearErrorsAndLeavesTheTargetUntouched() throws {
        let target = try TargetProcess("target")
        let mapsBefore = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
        let cases: [([String], String)] = [
            (["symbols", "99999999"], "no process with PID 99999999"),
            (["inject", "99999999", "/x.so"], "no process with PID 99999999"),
            (["symbols", "2"], "kernel thread"),
            (["symbols", "\(target.pid)", "nosuchmodule:*"], "no module matches 'nosuchmodule:*'"),
            (["symbols", "\(target.pid)", "target:nosuch"], "no function matches 'target:nosuch'"),
            (["inject", "\(target.pid)", "/no/such/lib.so"], "No such file or directory"),
            (["inject", "\(target.pid)", "lib.so"], "must be absolute"),
            (["inject", "\(target.pid)", Repo.target("x86_32")], "not an x86-64"),
        ]
        for (args, expected) in cases {
            let r = runProgram([Repo.hookit] + args)
            XCTAssertEqual(r.status, 1, "\(args)")
            XCTAssertTrue(r.stderr.contains(expected), "\(args): \(r.stderr)")
        }
        XCTAssertEqual(try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8), mapsBefore)
        XCTAssertEqual(try target.send("ping"), "pong")
        XCTAssertEqual(tracerPid(target.pid), "0")
    }

    func testThirtyTwoBitTargetIsRefused() throws {
        let target = try TargetProcess("x86_32", waitForReady: false)
        usleep(50_000)
        let r = hookit("inject", "\(target.pid)", Repo.target("libplugin.so"))
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("not an x86-64 process (32-bit ELF"), r.stderr)
        XCTAssertEqual(tracerPid(target.pid), "0")
    }

    func testAlreadyTracedTargetNamesItsTracer() throws {
        let target = try TargetProcess("target")
        // This test process becomes the tracer, like a debugger would.
        XCTAssertEqual(hk_ptrace(Int32(HK_PTRACE_SEIZE), target.pid, 0, 0), 0)
        defer { _ = ptraceInterruptAndDetach(target.pid) }
        let r = hookit("inject", "\(target.pid)", Repo.target("libplugin.so"))
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("already traced by PID \(getpid())"), r.stderr)
    }

    func testPermissionRefusalSaysWhatToDo() throws {
        let target = try TargetProcess("target")
        let r = runProgram(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            Repo.hookit, "inject", "\(target.pid)", Repo.target("libplugin.so")])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("permission denied"), r.stderr)
        XCTAssertTrue(r.stderr.contains("run hookit as root"), r.stderr)
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    // MARK: - helpers

    private func tracerPid(_ pid: pid_t) -> String? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        return s.split(separator: "\n").first { $0.hasPrefix("TracerPid:") }?.split(separator: "\t").last.map(String.init)
    }

    private func ptraceInterruptAndDetach(_ pid: pid_t) -> Int {
        _ = hk_ptrace(Int32(HK_PTRACE_INTERRUPT), pid, 0, 0)
        var status: Int32 = 0
        _ = waitpid(pid, &status, __WALL)
        return hk_ptrace(Int32(HK_PTRACE_DETACH), pid, 0, 0)
    }
}
