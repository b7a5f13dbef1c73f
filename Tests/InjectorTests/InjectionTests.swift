import Glibc
import TestSupport
import XCTest
@testable import Injector

/// Loading libraries into a running target.
final class InjectionTests: XCTestCase {
    func testInjectedLibraryIsUsableByTheTargetAndByRemoteCalls() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 8"), "threads 8")
        XCTAssertEqual(try target.send("plugin 5"), "missing")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        let lib = try tracee.inject(library: Repo.target("libplugin.so"), symbols: symbols)
        XCTAssertNotEqual(lib.handle, 0)
        XCTAssertTrue(try ProcMaps.read(target.pid).contains { $0.filePath == Repo.target("libplugin.so") && $0.start == lib.base })
        let fresh = try SymbolTable(pid: target.pid)
        let answer = try fresh.function("libplugin.so:plugin_answer")
        XCTAssertEqual(try tracee.call(answer.address, [7]), 4207, "the constructor ran, then our call")
        tracee.detach()
        XCTAssertEqual(try target.send("plugin 5"), "4205", "the target finds the library with dlsym")
    }

    func testFailingLibraryReportsTheTraceesDlerrorAndLeavesNoTrace() throws {
        let target = try TargetProcess("target")
        let mapsBefore = try ProcMaps.read(target.pid).filter { $0.path != "[stack]" }
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        XCTAssertThrowsError(try tracee.inject(library: Repo.target("libbroken.so"), symbols: symbols)) { e in
            guard case .dlopenFailed(_, let text) = e as? InjectorError else { return XCTFail("\(e)") }
            XCTAssertTrue(text.contains("undefined symbol: hookit_symbol_that_does_not_exist"), text)
        }
        tracee.detach()
        let mapsAfter = try ProcMaps.read(target.pid).filter { $0.path != "[stack]" }
        XCTAssertEqual(mapsAfter.map(\.path).filter { $0.contains("broken") }, [])
        XCTAssertEqual(mapsAfter.count, mapsBefore.count, "the scratch page was unmapped")
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testBadLibraryPathsAreRefusedBeforeTouchingTheTracee() throws {
        let target = try TargetProcess("target")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        for (path, fragment) in [("relative/lib.so", "absolute"), ("/no/such/lib.so", "No such file"),
                                 (Repo.target("target.c").replacingOccurrences("build/", ""), "not an ELF"),
                                 (Repo.target("x86_32"), "not an x86-64"), (Repo.target("target-nopie"), "not a shared object")] {
            XCTAssertThrowsError(try tracee.inject(library: path, symbols: symbols)) { e in
                guard case .libraryPath(_, let detail) = e as? InjectorError else { return XCTFail("\(path): \(e)") }
                XCTAssertTrue(detail.contains(fragment), "\(path): \(detail)")
            }
        }
        XCTAssertNil(tracee.stubLease, "nothing was written into the tracee")
        tracee.detach()
        XCTAssertEqual(try target.send("ping"), "pong")
    }
}

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        var out = ""
        var rest = self[...]
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

/// Libraries the tracee cannot see by path (another mount namespace) go in through memfds.
final class HiddenLibraryInjectionTests: XCTestCase {
    /// Two of them in a row: each dlopen must load its own file. (The loader knows objects by the
    /// name they were opened with; had the first memfd been closed, the second would have reused
    /// its number and dlopen("/proc/self/fd/N") would have answered with the first library.)
    func testTwoHiddenLibrariesAreTwoLibraries() throws {
        let dir = NSTemporaryDirectory() + "hookit-hidden-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for lib in ["libplugin.so", "libprogs.so"] {
            try? FileManager.default.removeItem(atPath: "\(dir)/\(lib)")
            try FileManager.default.copyItem(atPath: Repo.target(lib), toPath: "\(dir)/\(lib)")
        }
        let target = try TargetProcess(path: "/usr/bin/unshare", arguments: ["--mount", "--propagation", "private", "sh", "-c",
                                       "exec 3< \(Repo.target("target")) && mount -t tmpfs none \(dir) && exec /proc/self/fd/3"],
                                       waitForReady: true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/proc/\(target.pid)/root\(dir)/libplugin.so"), "hidden from the process")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        let plugin = try tracee.inject(library: "\(dir)/libplugin.so", symbols: symbols)
        let progs = try tracee.inject(library: "\(dir)/libprogs.so", symbols: symbols)
        XCTAssertNotEqual(plugin.handle, progs.handle)
        XCTAssertNotNil(try tracee.dlsym(handle: progs.handle, name: "record_exit", symbols: symbols), "libprogs.so's own symbol")
        XCTAssertNotNil(try tracee.dlsym(handle: plugin.handle, name: "plugin_answer", symbols: symbols))
        tracee.detach()
        XCTAssertEqual(try target.send("ping"), "pong")
    }
}
