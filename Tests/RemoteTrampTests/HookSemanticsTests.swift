import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// Each kind's semantics on ordinary (relocated) entries, checked through what the target sees.
final class HookSemanticsTests: XCTestCase {
    private func progs(_ h: HookHarness) throws -> [String: String] {
        var out: [String: String] = [:]
        for kv in try h.target.send("progs").split(separator: " ") {
            let p = kv.split(separator: "=", maxSplits: 1)
            if p.count == 2 { out[String(p[0])] = String(p[1]) }
        }
        return out
    }

    func testFentrySeesArgumentsBeforeTheFunctionRuns() throws {
        let h = try HookHarness()
        try h.link(.fentry, "add", "count_entry", cookie: 9)
        try h.go()
        XCTAssertEqual(try h.target.send("add 20 22"), "42")
        let p = try progs(h)
        XCTAssertEqual(p["entry"], "1")
        XCTAssertEqual(p["arg0"], "20")
        XCTAssertEqual(p["arg1"], "22")
        XCTAssertEqual(p["cookie"], "9")
        XCTAssertEqual(p["ip"], "0x" + String(try h.function("add").address, radix: 16))
        try h.finish()
        try h.assertCodeMatchesFileAfterDetach(["add"])
        XCTAssertEqual(try h.target.send("add 1 2"), "3")
    }

    func testFexitSeesArgumentsAndReturnValue() throws {
        let h = try HookHarness()
        try h.link(.fexit, "add", "record_exit")
        try h.go()
        XCTAssertEqual(try h.target.send("add 7 8"), "15")
        let p = try progs(h)
        XCTAssertEqual(p["exit"], "1")
        XCTAssertEqual(p["exit_arg0"], "7")
        XCTAssertEqual(p["exit_arg1"], "8")
        XCTAssertEqual(p["exit_ret"], "15")
        try h.finish()
        try h.assertCodeMatchesFileAfterDetach(["add"])
    }

    func testFmodRetCanSkipWithAnyValueIncludingZeroAndFexitSeesIt() throws {
        let h = try HookHarness()
        try h.link(.fentry, "add", "count_entry")
        try h.link(.fmodRet, "add", "skip_with_zero")
        try h.link(.fexit, "add", "record_exit")
        try h.go()
        XCTAssertEqual(try h.target.send("add 7 8"), "0", "skipped, returned 0")
        XCTAssertEqual(try h.target.send("calls"), "0", "the original never ran")
        let p = try progs(h)
        XCTAssertEqual(p["entry"], "1", "fentry ran first")
        XCTAssertEqual(p["exit_ret"], "0")
        try h.finish()
        XCTAssertEqual(try h.target.send("add 7 8"), "15")
        XCTAssertEqual(try h.target.send("calls"), "1")
    }

    func testFmodRetReturningZeroLetsTheOriginalRun() throws {
        let h = try HookHarness()
        try h.link(.fmodRet, "add", "pass_through")
        try h.link(.fmodRet, "add", "skip_with_42")
        try h.go()
        XCTAssertEqual(try h.target.send("add 1 1"), "42")
        XCTAssertEqual(try progs(h)["pass"], "1")
        try h.finish()
        let h2 = try HookHarness()
        try h2.link(.fmodRet, "add", "pass_through")
        try h2.go()
        XCTAssertEqual(try h2.target.send("add 1 1"), "2")
        XCTAssertEqual(try h2.target.send("calls"), "1")
        try h2.finish()
    }

    func testSeveralProgramsRunInAttachOrder() throws {
        let h = try HookHarness()
        try h.link(.fentry, "add", "order_b")
        try h.link(.fentry, "add", "order_a")
        try h.link(.fentry, "add", "order_c")
        try h.go()
        XCTAssertEqual(try h.target.send("add 1 2"), "3")
        XCTAssertEqual(try progs(h)["order"], "bac")
        try h.finish()
    }

    func testOneProgramOnManyFunctionsGetsEachFunctionsAddress() throws {
        let h = try HookHarness()
        try h.link(.fentry, "add", "count_entry")
        try h.link(.fentry, "rip_first", "count_entry")
        try h.go()
        _ = try h.target.send("ripfirst 1")
        XCTAssertEqual(try progs(h)["ip"], "0x" + String(try h.function("rip_first").address, radix: 16))
        _ = try h.target.send("add 1 1")
        XCTAssertEqual(try progs(h)["ip"], "0x" + String(try h.function("add").address, radix: 16))
        try h.finish()
    }

    func testReplaceSendsCallsElsewhereAndCanCallTheOriginal() throws {
        let h = try HookHarness()
        try h.link(.replace, "add", "\(HookHarness.replaceLib):my_add")
        try h.go()
        XCTAssertEqual(try h.target.send("add 2 3"), "1005", "my_add = original + 1000")
        XCTAssertEqual(try h.target.send("calls"), "1", "the original ran once, through hookit_original_add")
        try h.finish()
        XCTAssertEqual(try h.target.send("add 2 3"), "5")
    }

    func testRecursionGuardSkipsNestedRunsAndCountsMisses() throws {
        let h = try HookHarness()
        let link = try h.link(.fentry, "add", "calls_add")
        try h.go()
        XCTAssertEqual(try h.target.send("add 1 2"), "3")
        XCTAssertEqual(try progs(h)["recursive"], "1", "the nested run was skipped")
        let s = try h.stats(link)
        XCTAssertEqual(s.calls, 1)
        XCTAssertEqual(s.misses, 1)
        try h.finish()
    }

    func testRegistersFlagsAndAlignmentArePreserved() throws {
        let h = try HookHarness()
        try h.link(.fentry, "add", "count_entry")
        try h.link(.fexit, "add", "record_exit")
        try h.link(.fexit, "align_check", "record_exit")
        try h.link(.fexit, "fargs8", "record_exit")
        try h.go()
        XCTAssertEqual(try h.target.send("regcheck"), "0 7", "callee-saved registers, rsp, DF, MXCSR, x87 CW intact")
        XCTAssertEqual(try h.target.send("aligncheck"), "1", "16-byte alignment at the original's entry")
        XCTAssertEqual(try h.target.send("fargs8"), "204.000000", "xmm0-7 pass through")
        try h.finish()
    }

    /// A caller compiled with -fipa-ra keeps values in caller-saved registers across a call to a
    /// leaf it knows leaves them alone: every kind of image must give them back untouched.
    func testCallerSavedRegistersAreGivenBackForIPARACallers() throws {
        for kinds in [[(ProgramKind.fentry, nil as String?)], [(.fentry, "count_entry")], [(.fexit, "record_exit")],
                      [(.fmodRet, "pass_through"), (.fexit, nil)], [(.fmodRet, "skip_with_42")]] {
            let h = try HookHarness()
            for (kind, prog) in kinds { try h.link(kind, "ipara_leaf", prog) }
            try h.go()
            XCTAssertEqual(try h.target.send("ipara"), "0", "\(kinds): registers changed")
            try h.finish()
        }
    }

    func testStackArgumentsVariadicsStructsAndFloatsThroughFexit() throws {
        let h = try HookHarness()
        try h.link(.fexit, "sum8", "see_stack_args")
        try h.link(.fexit, "vsum", "record_exit")
        try h.link(.fexit, "big_by_value", "record_exit")
        try h.link(.fexit, "big_make", "record_exit")
        try h.link(.fexit, "fmuladd", "see_floats")
        try h.link(.fexit, "fhalf", "record_exit")
        try h.go()
        XCTAssertEqual(try h.target.send("sum8"), "204")
        var p = try progs(h)
        XCTAssertEqual(p["stack7"], "7")
        XCTAssertEqual(p["stack8"], "8")
        XCTAssertEqual(p["stack_ret"], "204")
        XCTAssertEqual(try h.target.send("vsum"), "78", "variadic with 12 arguments")
        XCTAssertEqual(try progs(h)["exit_ret"], "78")
        XCTAssertEqual(try h.target.send("bigval"), "55", "struct > 16 bytes by value")
        XCTAssertEqual(try h.target.send("bigmake"), "60", "struct returned through a hidden pointer")
        XCTAssertEqual(try h.target.send("fmuladd"), "3.250000")
        p = try progs(h)
        XCTAssertEqual(p["fa0"], "1.500000")
        XCTAssertEqual(p["fret"], "3.250000")
        XCTAssertEqual(try h.target.send("fhalf"), "2.500000")
        try h.finish()
    }

    func testRecursionEachLevelSeesItsOwnArgumentsAndResult() throws {
        let h = try HookHarness()
        try h.link(.fexit, "fib", "fmod_fib")
        try h.go()
        XCTAssertEqual(try h.target.send("fib 6"), "8")
        let pairs = try h.target.send("fibpairs").split(separator: " ").dropFirst(2)
        let fib: [Int] = [0, 1, 1, 2, 3, 5, 8]
        XCTAssertEqual(pairs.count, 25, "fib(6) makes 25 calls")
        for pair in pairs {
            let nr = pair.split(separator: ":").map { Int($0)! }
            XCTAssertEqual(fib[nr[0]], nr[1], "fib(\(nr[0])) level saw its own result")
        }
        try h.finish()
    }

    func testTrickyProloguesRunCorrectlyWhileHooked() throws {
        let h = try HookHarness()
        for f in ["rip_first", "jcc_first", "call_first", "endbr_add"] { try h.link(.fexit, f, "record_exit") }
        try h.go()
        XCTAssertEqual(try h.target.send("ripfirst 5"), "1005")
        XCTAssertEqual(try h.target.send("jccfirst 0"), "2")
        XCTAssertEqual(try h.target.send("jccfirst 9"), "1")
        XCTAssertEqual(try h.target.send("callfirst 5"), "12")
        XCTAssertEqual(try h.target.send("endbradd 2 3"), "5")
        XCTAssertEqual(try progs(h)["exit_ret"], "5")
        let endbr = try h.function("endbr_add")
        XCTAssertEqual(try h.tracee.memory.read(at: endbr.address, count: 4), PatchSite.endbr64, "endbr64 stays first")
        try h.finish()
        try h.assertCodeMatchesFileAfterDetach(["rip_first", "jcc_first", "call_first", "endbr_add"])
    }

    func testFunctionsThatCannotBePatchedSafelyAreRefusedWithTheReason() throws {
        let h = try HookHarness()
        XCTAssertThrowsError(try h.link(.fentry, "add4")) { e in
            guard case .cannotPatch(_, let reason) = e as? TrampolineError else { return XCTFail("\(e)") }
            XCTAssertTrue(reason.contains("function is 4 bytes, the patch needs 5"), reason)
        }
        XCTAssertThrowsError(try h.link(.fentry, "loop_back")) { e in
            guard case .cannotPatch(_, let reason) = e as? TrampolineError else { return XCTFail("\(e)") }
            XCTAssertTrue(reason.contains("goes back into the displaced bytes"), reason)
        }
        try h.go()
        try h.finish()
        try h.assertCodeMatchesFileAfterDetach(["add4", "add4_next", "loop_back"])
        XCTAssertEqual(try h.target.send("add4 2 3"), "5")
        XCTAssertEqual(try h.target.send("loopback 5"), "10")
    }
}
