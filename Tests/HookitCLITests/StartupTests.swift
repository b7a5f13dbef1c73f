import Foundation
import Glibc
import TestSupport
import XCTest

/// `hookit run` has every hook live before the program's first instruction (issue 17, part 2):
/// constructors, .init_array, a library's constructor and libc's calls into an interposed malloc
/// are all seen. build/startup counts each of its calls itself and prints the counts.
final class StartupTests: XCTestCase {
    /// The target's own counts: `mallocs=M before_main=B step=S lib_step=L memfds=F preload=P`.
    private func targetCounts(_ output: String) throws -> [String: String] {
        let line = try XCTUnwrap(output.split(separator: "\n").first { $0.hasPrefix("mallocs=") }, output)
        return Dictionary(uniqueKeysWithValues: line.split(separator: " ").map {
            let kv = $0.split(separator: "=", maxSplits: 1)
            return (String(kv[0]), String(kv[1]))
        })
    }

    private func calls(_ events: [[String: Any]], _ function: String) -> Int? {
        events.last { $0["event"] as? String == "stats" && $0["function"] as? String == function }?["calls"] as? Int
    }

    func testRunCountsConstructorsLibraryConstructorsAndStartupMallocsExactly() throws {
        let run = runProgram([Repo.hookit, "run", "--json", "--count", "startup:startup_step", "--count", "libstartuplib.so:startup_lib_step",
                              "--count", "startup:malloc", "--", Repo.target("startup")])
        XCTAssertEqual(run.status, 0, run.stderr)
        let seen = try targetCounts(run.output)
        XCTAssertEqual(seen["step"], "6", "3 from the constructor, 1 from .init_array, 2 from main: \(run.output)")
        XCTAssertEqual(seen["lib_step"], "4", run.output)
        XCTAssertEqual(seen["mallocs"], seen["before_main"], "every malloc call came before main: \(run.output)")
        XCTAssertGreaterThanOrEqual(Int(seen["before_main"] ?? "") ?? 0, 2, "libc's strdup from both constructors: \(run.output)")
        XCTAssertEqual(seen["preload"], "(unset)", "the program's environment has no trace of hookit's preloads")
        XCTAssertEqual(seen["memfds"], "0", "the descriptor the runtime was preloaded from is closed: \(run.output)")
        let events = events(run.output)
        XCTAssertEqual(calls(events, "startup:startup_step"), 6, run.output)
        XCTAssertEqual(calls(events, "libstartuplib.so:startup_lib_step"), 4, run.output)
        XCTAssertEqual(calls(events, "startup:malloc"), Int(seen["mallocs"] ?? ""), run.output)
    }

    func testRunTracesTheCallsMadeBeforeMainInOrder() throws {
        let run = runProgram([Repo.hookit, "run", "--json", "--trace", "startup:startup_step", "--", Repo.target("startup")])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(try targetCounts(run.output)["step"], "6", run.output)
        let events = events(run.output)
        let traced = events.filter { $0["event"] as? String == "call" }
        // The constructor's chain 1 -> 4 -> 13, the .init_array entry's 7, then main's 1 and 2.
        XCTAssertEqual(traced.compactMap { ($0["args"] as? [Any])?.first as? Int }, [1, 4, 13, 7, 1, 2], run.output)
        XCTAssertEqual(traced.compactMap { $0["ret"] as? Int }, [4, 13, 40, 22, 4, 7], run.output)
        let exited = try XCTUnwrap(events.last, run.output)
        XCTAssertEqual((exited["traced"] as? Int ?? 0) + (exited["dropped"] as? Int ?? 0), 6, run.output)
    }

    func testProgramThatExitsInItsConstructorStillGetsItsCounts() throws {
        let run = runProgram([Repo.hookit, "run", "--json", "--count", "startup:startup_step", "--count", "startup:malloc",
                              "--", Repo.target("startup"), "exit-in-constructor"])
        XCTAssertEqual(run.status, 3, "the program's own exit status: \(run.stderr)")
        let seen = try targetCounts(run.output)
        XCTAssertEqual(seen["step"], "3", run.output)
        let events = events(run.output)
        XCTAssertEqual(calls(events, "startup:startup_step"), 3, run.output)
        XCTAssertEqual(calls(events, "startup:malloc"), Int(seen["mallocs"] ?? ""), run.output)
    }

    func testProgramLibraryRunsForALibraryConstructorsCalls() throws {
        let source = NSTemporaryDirectory() + "hookit-startup-skip-\(getpid()).c"
        defer { unlink(source) }
        try "#include \"hookit.h\"\nuint64_t skip(struct hookit_ctx *ctx) { ctx->ret = 100; return 1; }\n"
            .write(toFile: source, atomically: true, encoding: .utf8)
        let run = runProgram([Repo.hookit, "run", "--prog", "fmod_ret:libstartuplib.so:startup_lib_step=\(source):skip",
                              "--", Repo.target("startup")])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(try targetCounts(run.output)["lib_step"], "0", "the program skipped all 4 calls of the library's constructor: \(run.output)")
    }

    func testStaticProgramGetsTheBuiltInCountFromItsEntryPoint() throws {
        let run = runProgram([Repo.hookit, "run", "--json", "--count", "startup-static:startup_step", "--", Repo.target("startup-static")])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(try targetCounts(run.output)["step"], "6", run.output)
        XCTAssertEqual(calls(events(run.output), "startup-static:startup_step"), 6, run.output)
        XCTAssertTrue(run.stderr.contains("statically linked"), "says why the count has no time: \(run.stderr)")
    }

    func testStaticProgramIsRefusedWhatNeedsTheRuntimeBeforeItRuns() throws {
        let run = runProgram([Repo.hookit, "run", "--trace", "startup-static:startup_step", "--", Repo.target("startup-static")])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("statically linked") && run.stderr.contains("built-in count"), run.stderr)
        XCTAssertFalse(run.output.contains("mallocs="), "the program did not run without its hooks: \(run.output)")
    }
}

extension StartupTests {
    /// A program library that defines a function the program's libraries define too would,
    /// preloaded, replace theirs for every caller: refused, and the program does not run.
    func testProgramLibraryThatWouldInterposeOnTheProgramsLibrariesIsRefused() throws {
        let source = NSTemporaryDirectory() + "hookit-startup-clash-\(getpid()).c"
        defer { unlink(source) }
        try "#include \"hookit.h\"\nuint64_t seen(struct hookit_ctx *ctx) { (void)ctx; return 0; }\nlong startup_lib_step(long x) { return x; }\n"
            .write(toFile: source, atomically: true, encoding: .utf8)
        let run = runProgram([Repo.hookit, "run", "--prog", "fentry:startup:startup_step=\(source):seen", "--", Repo.target("startup")])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("startup_lib_step") && run.stderr.contains("libstartuplib.so"), run.stderr)
        XCTAssertFalse(run.output.contains("mallocs="), "the program did not run: \(run.output)")
    }
}
