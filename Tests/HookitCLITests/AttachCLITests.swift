import Foundation
import Glibc
import TestSupport
import XCTest

/// `hookit attach` end to end: hooks live while the target works, then a clean detach.
final class AttachCLITests: XCTestCase {
    private func json(_ line: Substring) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }

    /// Starts `hookit attach`, waits for its "attached" line, runs `work`, sends SIGINT and
    /// returns everything hookit printed.
    private func attach(_ target: TargetProcess, _ args: [String], work: () throws -> Void) throws -> String {
        let (pid, out) = spawnBackground([Repo.hookit, "attach", "\(target.pid)", "--json"] + args)
        guard let first = readLine(out, timeout: 60) else {
            kill(pid, SIGKILL); _ = waitFor(pid)
            throw TestError("hookit printed nothing: \(readAll(out))")
        }
        var printed = first + "\n"
        if first.contains("\"refused\"") && !first.contains("\"attached\"") {
            while let l = readLine(out, timeout: 5) { printed += l + "\n"; if l.contains("\"attached\"") { break } }
        }
        guard printed.contains("\"event\":\"attached\"") else {
            kill(pid, SIGKILL); _ = waitFor(pid)
            throw TestError("not attached: \(printed)\(readAll(out))")
        }
        try work()
        kill(pid, SIGINT)
        let rest = readAll(out)             // before waiting: a full pipe would block hookit
        XCTAssertEqual(waitFor(pid), 0)
        return printed + rest
    }

    /// hookit's runtime is plain C: it goes in without the Swift runtime its build links against
    /// (whose constructors would run in the process), and once, however many sessions attach.
    func testRuntimeGoesInWithoutTheSwiftRuntimeAndOnceAcrossSessions() throws {
        let target = try TargetProcess("hooktarget")
        for i in 1...3 {
            let out = try attach(target, ["--count", "hooktarget:add"]) { XCTAssertEqual(try target.send("add \(i) 1"), "\(i + 1)") }
            XCTAssertTrue(out.contains("\"calls\":1"), out)
        }
        let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
        XCTAssertFalse(maps.contains("libswiftCore"), maps)
        XCTAssertEqual(maps.split(separator: "\n").filter { $0.contains("r-xp") && $0.contains("libhookit_rt.so") }.count, 1, maps)
    }

    func testCountAndProgramsLiveThenCleanDetachWithStats() throws {
        let target = try TargetProcess("hooktarget")
        let progs = Repo.target("libprogs.so")
        let out = try attach(target, ["--count", "hooktarget:patch5",
                                      "--prog", "fexit:hooktarget:nopped=\(progs):record_exit,cookie=5"]) {
            for i in 1...5 { XCTAssertEqual(try target.send("patch5 \(i)"), "\(3 * i)") }
            XCTAssertEqual(try target.send("nopped 2"), "7")
            XCTAssertTrue(try target.send("progs").contains("exit_ret=7"))
        }
        let lines = out.split(separator: "\n")
        let events = lines.compactMap(json)
        let attached = try XCTUnwrap(events.first { $0["event"] as? String == "attached" })
        XCTAssertEqual(attached["functions"] as? Int, 2)
        let stats = events.filter { $0["event"] as? String == "stats" }
        let p5 = try XCTUnwrap(stats.first { $0["function"] as? String == "hooktarget:patch5" })
        XCTAssertEqual(p5["calls"] as? Int, 5)
        XCTAssertEqual(p5["misses"] as? Int, 0)
        XCTAssertTrue((p5["address"] as? String)?.hasPrefix("0x") ?? false)
        let np = try XCTUnwrap(stats.first { $0["function"] as? String == "hooktarget:nopped" })
        XCTAssertEqual(np["calls"] as? Int, 1)
        XCTAssertEqual(np["cookie"] as? Int, 5)
        let detached = try XCTUnwrap(events.last)
        XCTAssertEqual(detached["event"] as? String, "detached")
        XCTAssertEqual(detached["restored"] as? Int, 2)
        XCTAssertEqual((detached["left_mapped"] as? [Any])?.count, 0)
        XCTAssertEqual(try target.send("patch5 2"), "6")
        XCTAssertEqual(try target.send("nopped 2"), "7")
        // No hookit page is left in the target.
        let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
        let anonymousCode = maps.split(separator: "\n").filter { line in
            let f = line.split(separator: " ")
            return f.count == 5 && f[1] == "r-xp"
        }
        XCTAssertEqual(anonymousCode, [], "hookit's trampoline pages are unmapped")
    }

    /// Programs' time is kept only with --prog-time (as the kernel's bpf_stats_enabled); their
    /// runs are always counted. One process, session after session: the runtime stays loaded
    /// between them, and a session without --prog-time after one with it keeps no time.
    func testProgramTimeIsKeptOnlyWhenAskedFor() throws {
        let progs = Repo.target("libprogs.so")
        let target = try TargetProcess("hooktarget")
        for progTime in [false, true, false] {
            let out = try attach(target, ["--prog", "fentry:hooktarget:add=\(progs):count_entry"] + (progTime ? ["--prog-time"] : [])) {
                for _ in 0..<50 { _ = try target.send("add 1 1") }
            }
            let stats = try XCTUnwrap(out.split(separator: "\n").compactMap(json).first { $0["event"] as? String == "stats" })
            XCTAssertEqual(stats["calls"] as? Int, 50)
            if progTime { XCTAssertGreaterThan(stats["ns"] as? Int ?? 0, 0) } else { XCTAssertEqual(stats["ns"] as? Int, 0, "--prog-time \(progTime)") }
        }
    }

    /// Every function of libc that hookit accepts gets a C program, in a live multi-threaded
    /// target: it keeps answering right, the runtime itself never recurses into hooked libc
    /// (at most one miss per thread, for its first errno lookup), and detach restores it all.
    func testAllOfLibcWithACProgram() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 4"), "threads 4")
        let progs = Repo.target("libprogs.so")
        let out = try attach(target, ["--prog", "fentry:libc.so.6:*=\(progs):count_entry"]) {
            for i in 0..<20 { XCTAssertEqual(try target.send("add \(i) 1"), "\(i + 1)") }
            XCTAssertTrue(try target.send("strlen").hasSuffix(" 6"))
            usleep(300_000)
        }
        let events = out.split(separator: "\n").compactMap(json)
        let attached = try XCTUnwrap(events.first { $0["event"] as? String == "attached" })
        XCTAssertGreaterThan(attached["functions"] as? Int ?? 0, 1500, "most of libc hooked")
        let stats = events.filter { $0["event"] as? String == "stats" }
        let calls = stats.reduce(0) { $0 + ($1["calls"] as? Int ?? 0) }
        let misses = stats.reduce(0) { $0 + ($1["misses"] as? Int ?? 0) }
        XCTAssertGreaterThan(calls, 100)
        XCTAssertLessThanOrEqual(misses, 8, "the runtime calls no hooked libc function on its own")
        XCTAssertEqual((events.last?["restored"] as? Int), attached["functions"] as? Int)
        XCTAssertEqual(try target.send("add 2 2"), "4")
        XCTAssertEqual(try target.send("quiet"), "made 0")
    }

    /// Two names for one function (nl_langinfo_l and __nl_langinfo_l) are hooked once.
    func testAliasesAreHookedOnce() throws {
        let target = try TargetProcess("hooktarget")
        let out = try attach(target, ["--count", "libc.so.6:*nl_langinfo_l"]) {
            XCTAssertEqual(try target.send("add 1 2"), "3")
        }
        let attached = try XCTUnwrap(out.split(separator: "\n").compactMap(json).first { $0["event"] as? String == "attached" })
        XCTAssertEqual(attached["functions"] as? Int, 1)
        XCTAssertEqual(attached["links"] as? Int, 2, "a timed count: one entry and one exit program")
    }

    /// IFUNC implementations (strlen is __strlen_avx2 or the like, with no symbol in the
    /// stripped libc) get their extent from .eh_frame and are hooked; an implementation that
    /// another function jumps into (memmove: __mempcpy_*_unaligned_erms jumps 3 bytes into it)
    /// is refused with the place of that jump.
    func testIFuncImplementationsHookedAndJumpsFromOtherFunctionsRefused() throws {
        let target = try TargetProcess("hooktarget")
        let out = try attach(target, ["--count", "libc.so.6:strlen", "--count", "libc.so.6:mem*"]) {
            XCTAssertEqual(try target.send("greet alice"), "5")
        }
        let events = out.split(separator: "\n").compactMap(json)
        let stats = events.filter { $0["event"] as? String == "stats" }
        XCTAssertGreaterThanOrEqual(stats.first { $0["function"] as? String == "libc.so.6:strlen" }?["calls"] as? Int ?? 0, 1, out)
        let refused = events.filter { $0["event"] as? String == "refused" && $0["function"] as? String == "libc.so.6:memcpy" }
        XCTAssertTrue(refused.contains { ($0["reason"] as? String ?? "").contains("outside the function, branches to") }, out)
        XCTAssertEqual(try target.send("greet bob"), "3")
    }

    func testBadProgSpecAndUnknownFunctionAreClearErrors() throws {
        let target = try TargetProcess("hooktarget")
        let r1 = runProgram([Repo.hookit, "attach", "\(target.pid)", "--prog", "sideways:patch5=/x.so:f"])
        XCTAssertNotEqual(r1.status, 0)
        XCTAssertTrue(r1.stderr.contains("KIND fentry, fexit, fmod_ret or replace"), r1.stderr)
        let r2 = runProgram([Repo.hookit, "attach", "\(target.pid)", "--count", "hooktarget:no_such_fn", "--duration", "1"])
        XCTAssertEqual(r2.status, 1)
        XCTAssertTrue(r2.stderr.contains("no function matches 'hooktarget:no_such_fn'"), r2.stderr)
        XCTAssertEqual(try target.send("ping"), "pong")
    }
}
