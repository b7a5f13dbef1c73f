import Glibc
import TestSupport
import XCTest
@testable import Injector

/// Modules and symbols, checked against readelf and against what the target itself sees.
final class SymbolTests: XCTestCase {
    /// Defined functions as readelf lists them (`--dyn-syms` for the dynamic table only):
    /// "name@value" for FUNC and IFUNC symbols with a section and a non-zero value.
    private func readelfFunctions(_ path: String, dynamic: Bool) -> Set<String> {
        let r = runProgram(["/usr/bin/readelf", "-W", dynamic ? "--dyn-syms" : "--syms", path])
        var out = Set<String>()
        for line in r.output.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 8, ["FUNC", "IFUNC"].contains(f[3]), f[6] != "UND",
                  let value = UInt64(f[1], radix: 16), value != 0 else { continue }
            out.insert("\(String(f[7]).strippingSymbolVersion)@\(value)")
        }
        return out
    }

    private func checkVariant(_ name: String, dynamicOnly: Bool = false) throws {
        let target = try TargetProcess(name)
        let table = try SymbolTable(pid: target.pid)
        guard let exe = table.executable else { return XCTFail("no executable module") }
        XCTAssertEqual(exe.name, name)
        // readelf shows an IFUNC at its resolver; hookit at its implementation, resolver beside it.
        let ours = Set(table.functions(in: exe).map { "\($0.name)@\(($0.ifuncResolver ?? $0.address) - exe.bias)" })
        let theirs = readelfFunctions(Repo.target(name), dynamic: dynamicOnly)
        XCTAssertFalse(theirs.isEmpty)
        XCTAssertEqual(ours.subtracting(theirs), [], "\(name): listed by hookit, not by readelf")
        XCTAssertEqual(theirs.subtracting(ours), [], "\(name): listed by readelf, not by hookit")
        // The address hookit computes is the one the running program uses.
        let add = try table.function("\(name):add")
        XCTAssertEqual(try target.send("addr"), "0x" + String(add.address, radix: 16))
        XCTAssertGreaterThan(add.size, 0)
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testPIEExecutableSymbolsMatchNmAndTheRunningProgram() throws { try checkVariant("target") }
    func testNonPIEExecutableSymbolsMatchNm() throws { try checkVariant("target-nopie") }
    func testStaticExecutableSymbolsMatchNm() throws { try checkVariant("target-static") }
    func testStrippedExecutableUsesDynsym() throws { try checkVariant("target-stripped", dynamicOnly: true) }

    func testModulesHaveTheirLoadBias() throws {
        let target = try TargetProcess("target")
        let table = try SymbolTable(pid: target.pid)
        let names = table.modules.map(\.name)
        XCTAssertTrue(names.contains("target"))
        XCTAssertTrue(names.contains("libc.so.6"))
        XCTAssertTrue(names.contains("linux-vdso.so.1"))
        let libc = table.module(named: "libc.so.6")!
        XCTAssertEqual(libc.bias, libc.start, "a shared library's first segment is at vaddr 0")
        XCTAssertEqual(table.module(named: "target")!.bias, table.module(named: "target")!.start)
    }

    func testNonPIEHasZeroBias() throws {
        let target = try TargetProcess("target-nopie")
        let table = try SymbolTable(pid: target.pid)
        XCTAssertEqual(table.module(named: "target-nopie")?.bias, 0)
    }

    func testIFuncStrlenResolvesToTheImplementationTheTargetRuns() throws {
        let target = try TargetProcess("target")
        let table = try SymbolTable(pid: target.pid)
        let strlen = try table.function("libc.so.6:strlen")
        let seen = try target.send("strlen").split(separator: " ")
        XCTAssertEqual(String(seen[0]), "0x" + String(strlen.address, radix: 16), "the target's own strlen pointer")
        XCTAssertEqual(seen[1], "6")
        let resolver = try XCTUnwrap(strlen.ifuncResolver)
        XCTAssertNotEqual(resolver, strlen.address)
        // readelf agrees on where the resolver is.
        let libc = table.module(named: "libc.so.6")!
        let dyn = runProgram(["/usr/bin/readelf", "-W", "--dyn-syms", libc.path]).output
        let line = dyn.split(separator: "\n").first { $0.hasSuffix(" strlen@@GLIBC_2.2.5") }
        let value = UInt64(line!.split(separator: " ")[1], radix: 16)!
        XCTAssertEqual(resolver, libc.bias + value)
    }

    func testVersionedNamesMatchWithoutTheirVersion() throws {
        let target = try TargetProcess("target")
        let table = try SymbolTable(pid: target.pid)
        let memcpy = try table.function("libc.so.6:memcpy")          // memcpy@@GLIBC_2.14
        XCTAssertTrue(table.module(named: "libc.so.6")!.executableContains(memcpy.address))
        XCTAssertEqual("memcpy@@GLIBC_2.14".strippingSymbolVersion, "memcpy")
        XCTAssertEqual("dlopen@GLIBC_2.2.5".strippingSymbolVersion, "dlopen")
    }

    func testVDSOFunctionsAreListedInsideTheVDSO() throws {
        let target = try TargetProcess("target")
        let table = try SymbolTable(pid: target.pid)
        let vdso = try XCTUnwrap(table.module(named: "linux-vdso.so.1"))
        let fns = try table.resolve([SymbolPattern("linux-vdso.so.1:*clock_gettime")])
        XCTAssertFalse(fns.isEmpty)
        for f in fns { XCTAssertTrue(vdso.contains(f.address), f.name) }
    }

    func testPatternsSelectModulesAndFunctions() throws {
        let target = try TargetProcess("target")
        let table = try SymbolTable(pid: target.pid)
        XCTAssertEqual(try table.resolve([SymbolPattern("target:add")]).map(\.name), ["add"])
        let strs = try table.resolve([SymbolPattern("libc:str*")])
        XCTAssertTrue(strs.contains { $0.name == "strlen" })
        XCTAssertTrue(strs.allSatisfy { $0.name.hasPrefix("str") && $0.module == "libc.so.6" })
        let anywhere = try table.resolve([SymbolPattern("weigh*")])
        XCTAssertEqual(anywhere.map(\.module), ["target"])
        XCTAssertThrowsError(try table.resolve([SymbolPattern("nosuchmodule:*")])) { e in
            guard case .noModule = e as? InjectorError else { return XCTFail("\(e)") }
            XCTAssertTrue("\(e)".contains("libc.so.6"), "the error lists the loaded modules")
        }
        XCTAssertThrowsError(try table.resolve([SymbolPattern("target:no_such_function")])) { e in
            XCTAssertEqual(e as? InjectorError, .noSymbol(pattern: "target:no_such_function"))
        }
        XCTAssertEqual(try SymbolPattern("ns::f").module, nil, "C++ :: is not a module separator")
        XCTAssertThrowsError(try SymbolPattern("libc:"))
    }

    func testDeletedLibraryStillReadsThroughMapFiles() throws {
        // Copy the plugin, load it into the target, delete the file: symbols must still resolve.
        let copy = "/tmp/hookit-deleted-\(getpid()).so"
        XCTAssertEqual(runProgram(["/bin/cp", Repo.target("libplugin.so"), copy]).status, 0)
        let target = try TargetProcess("target")
        let table0 = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        _ = try tracee.inject(library: copy, symbols: table0)
        tracee.detach()
        unlink(copy)
        let table = try SymbolTable(pid: target.pid)
        let m = try XCTUnwrap(table.modules.first { $0.path == copy })
        XCTAssertTrue(m.deleted)
        let f = try table.function("hookit-deleted-\(getpid()).so:plugin_answer")
        XCTAssertTrue(m.executableContains(f.address))
        XCTAssertEqual(try target.send("plugin 1"), "4201")
    }
}
