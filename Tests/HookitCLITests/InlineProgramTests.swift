import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// `--prog KIND:PATTERN=./file.c:SYMBOL`: C source compiled on the fly (Frida's CModule) and
/// attached, checked by what hooktarget returns; a file that does not compile is reported with
/// its file:line and leaves the process untouched.
final class InlineProgramTests: XCTestCase {
    /// An fmod_ret program that makes add(a, b) return a·b without running it, and counts its
    /// runs in a global of its own.
    private let times = """
        #include "hookit.h"

        uint64_t inline_runs;

        uint64_t times(struct hookit_ctx *ctx) {
            __atomic_fetch_add(&inline_runs, 1, __ATOMIC_SEQ_CST);
            ctx->ret = ctx->args[0] * ctx->args[1];
            return 1;
        }

        """

    private var directory = ""
    private var previousDirectory = ""

    /// Each test runs hookit from a directory of its own holding the sources, so that the
    /// programs are named as a user names them: ./times.c.
    override func setUpWithError() throws {
        var template = Array("/tmp/hookit-inline-test-XXXXXX".utf8CString)
        directory = String(cString: try XCTUnwrap(mkdtemp(&template)))
        previousDirectory = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(directory))
        try times.write(toFile: "\(directory)/times.c", atomically: true, encoding: .utf8)
    }

    override func tearDown() {
        _ = FileManager.default.changeCurrentDirectoryPath(previousDirectory)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The program's global, read from the process (the target finds it with dlsym).
    private func runs(_ target: TargetProcess) throws -> UInt64 {
        let reply = try target.send("addr inline_runs")
        let address = try XCTUnwrap(UInt64(reply.dropFirst(2), radix: 16), reply)
        var value: UInt64 = 0
        XCTAssertEqual(hk_vm_read(target.pid, address, &value, 8), 8)
        return value
    }

    func testInlineProgramIsCompiledAttachedAndItsDirectoryRemovedAtExit() throws {
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--prog", "fmod_ret:hooktarget:add=./times.c:times"])
        try attached(h, target)
        XCTAssertEqual(try target.send("add 6 7"), "42", "the inline program decides what add returns")
        XCTAssertEqual(try target.send("add 2 3"), "6")
        XCTAssertEqual(try target.send("calls"), "0", "and add itself never ran")
        XCTAssertEqual(try runs(target), 2)
        let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
        let built = try XCTUnwrap(maps.split(separator: "\n").first { $0.hasSuffix("/times.1.so") }, maps)
        let library = String(built[built.firstIndex(of: "/")!...])
        let builtDirectory = String(library[..<library.lastIndex(of: "/")!])
        XCTAssertTrue(builtDirectory.hasPrefix("/tmp/hookit-prog-"), library)
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let stats = try XCTUnwrap(events(out).first { $0["event"] as? String == "stats" }, out)
        XCTAssertEqual(stats["calls"] as? Int, 2)
        XCTAssertEqual(stats["kind"] as? String, "fmod_ret")
        XCTAssertFalse(FileManager.default.fileExists(atPath: builtDirectory), "hookit's build directory goes at exit")
        XCTAssertTrue(try codeEqualsFile(target, "add"))
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    /// A replacement from source too, calling the original through HOOKIT_ORIGINAL.
    func testReplacementFromSource() throws {
        let target = try TargetProcess("hooktarget")
        try """
            #include "hookit.h"

            HOOKIT_ORIGINAL(add, long, (long, long));

            long add_plus_1000(long a, long b) { return hookit_original_add(a, b) + 1000; }

            """.write(toFile: "\(directory)/plus.c", atomically: true, encoding: .utf8)
        let h = Background(["attach", "\(target.pid)", "--json", "--replace", "hooktarget:add=./plus.c:add_plus_1000"])
        try attached(h, target)
        XCTAssertEqual(try target.send("add 2 3"), "1005")
        XCTAssertEqual(try target.send("calls"), "1", "the original ran, called from the replacement")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(try codeEqualsFile(target, "add"))
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    /// cc's own diagnostics, with the file and line of the mistake; nothing attached, nothing
    /// loaded, the code as in the file. A file that compiles but lacks the symbol is refused too.
    func testCompileErrorShowsFileAndLineAndLeavesTheProcessUntouched() throws {
        let target = try TargetProcess("hooktarget")
        try """
            #include "hookit.h"

            uint64_t broken(struct hookit_ctx *ctx) {
                return ctx->no_such_field;
            }

            """.write(toFile: "\(directory)/broken.c", atomically: true, encoding: .utf8)
        let r = runProgram([Repo.hookit, "attach", "\(target.pid)", "--prog", "fentry:hooktarget:add=./broken.c:broken"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("./broken.c:4:"), "file:line of the error: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("no_such_field"), r.stderr)
        XCTAssertTrue(r.stderr.contains("does not compile") && r.stderr.contains("nothing was attached"), r.stderr)

        let missing = runProgram([Repo.hookit, "attach", "\(target.pid)", "--prog", "fentry:hooktarget:add=./times.c:nope"])
        XCTAssertEqual(missing.status, 1, missing.stderr)
        XCTAssertTrue(missing.stderr.contains("./times.c defines no function nope"), missing.stderr)
        let gone = runProgram([Repo.hookit, "attach", "\(target.pid)", "--prog", "fentry:hooktarget:add=./absent.c:x"])
        XCTAssertTrue(gone.stderr.contains("cannot read the program source ./absent.c"), gone.stderr)

        XCTAssertTrue(try codeEqualsFile(target, "add"), "the entry as in the file")
        let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
        XCTAssertFalse(maps.contains("hookit"), "nothing was loaded into the process:\n\(maps)")
        XCTAssertEqual(try readStatus(target.pid, "TracerPid"), "0")
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    /// A process whose /tmp is not hookit's (a mount namespace of its own, as in a container):
    /// the program built in hookit's /tmp goes in as any library it cannot see, through a memfd.
    func testInlineProgramReachesAProcessThatCannotSeeHookitsTmp() throws {
        Repo.buildTargets()
        let target = try TargetProcess(path: "/usr/bin/unshare", arguments: ["--mount", "--propagation", "private", "sh", "-c",
                                       "mount -t tmpfs none /tmp && exec \(Repo.target("hooktarget"))"], waitForReady: true)
        let h = Background(["attach", "\(target.pid)", "--json", "--prog", "fmod_ret:hooktarget:add=\(directory)/times.c:times"])
        try attached(h, target)
        XCTAssertEqual(try target.send("add 6 7"), "42")
        XCTAssertEqual(try runs(target), 1)
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(try codeEqualsFile(target, "add"))
        XCTAssertEqual(try target.send("add 6 7"), "13")
    }

    private func readStatus(_ pid: pid_t, _ field: String) throws -> String {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix(field + ":") })
        return line.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces)
    }
}
