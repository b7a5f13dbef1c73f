import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// Issue 12, design.md invariant 5: a hooked function gives back every register the original
/// would not have changed, on every path (resume, call-original, skip, replace). gcc's
/// -fipa-ra (on at -O2) callers keep values in caller-saved registers across a direct call to
/// a function whose body they have seen, so "caller-saved" is no licence.
///
/// The real hookit against testtargets/regcheck (HOOKTARGETS.md): its probes put a magic value
/// in every register around a direct call to an asm leaf and answer a mask of what changed
/// besides the leaf's own return registers; its `loop` is gcc's own code, keeping its countdown
/// in rdx, its sum in rcx and doubles in xmm0/xmm1 across `call add`.
final class RegisterPreservationTests: XCTestCase {
    private let progs = Repo.target("libprogs.so")
    private let replacements = Repo.target("libregreplace.so")
    private let leaves = ["add_leaf", "pair_leaf", "dbl_leaf"]

    // What the original functions answer to the calls the checks make:
    // add_leaf(100, 23) = 123, pair_leaf(100, 23) = {123, 77}, dbl_leaf(1.5, 2.25) = 3.75,
    // sum_loop(1000) = Σ_{i=1..1000} add(i, 1) + 1000/2 = 502000.
    private let loopN = 1000

    /// The expected sum_loop(1000) when add(i, 1) returns `add(i)`.
    private func loopSum(_ add: (Int) -> Int) -> Int { (1...loopN).reduce(0) { $0 + add($1) } + loopN / 2 }

    // MARK: - the probes themselves

    /// Unhooked, every probe reports that nothing but the leaf's return registers changed, and
    /// the spin thread agrees: the checks below cannot pass because they see nothing.
    func testUnhookedLeavesChangeOnlyTheirReturnRegisters() throws {
        let target = try TargetProcess("regcheck")
        try assertOriginal(target, "unhooked")
        XCTAssertEqual(try target.send("check_add 3 4"), "0 7")
        XCTAssertEqual(try target.send("spin"), "spinning")
        let s = try spinStats(target, atLeast: 10_000)
        XCTAssertEqual(s.mask, 0, "spin, unhooked: \(registers(s.mask)) changed")
        XCTAssertEqual(s.wrong, 0)
        XCTAssertEqual(try target.send("spinstop"), "stopped")
    }

    // MARK: - skip paths: --override and fmod_ret

    /// --override skips the function: rax is the value; rdx, xmm0 and xmm1 stay the caller's
    /// (the override program set none of ctx->ret_hi, ctx->xmm_ret), and so does every other
    /// register.
    func testOverrideSetsOnlyRaxAndLeavesRdxAndXmmAsTheCallerHadThem() throws {
        let mode = "--override =7"
        try withHookit(leaves.flatMap { ["--override", "regcheck:\($0)=7"] }, on: leaves) { t in
            try assertAddLeaf(t, gives: 7, mode)
            try assertPairLeaf(t, gives: 7, high: .callersRDX, mode)
            try assertDblLeaf(t, gives: 1.5, "\(mode): xmm0 stays the caller's x")
        }
    }

    /// A fmod_ret C program that returns non-zero (skip_with_42 sets only ctx->ret): the same
    /// as --override, through the path that saves the vector state for a user program.
    func testFmodRetSkipSetsOnlyRaxAndLeavesRdxAndXmmAsTheCallerHadThem() throws {
        let mode = "fmod_ret skip_with_42"
        try withHookit(leaves.flatMap { prog("fmod_ret", $0, "skip_with_42") }, on: leaves) { t in
            try assertAddLeaf(t, gives: 42, mode)
            try assertPairLeaf(t, gives: 42, high: .callersRDX, mode)
            try assertDblLeaf(t, gives: 1.5, "\(mode): xmm0 stays the caller's x")
        }
    }

    /// gcc's loop around `call add` under --override regcheck:add=7: its countdown in rdx must
    /// survive the skip (if it does not, the loop never ends; the check times out).
    func testOverrideOfGccCompiledAddKeepsItsCallersLoopRegisters() throws {
        try withHookit(["--override", "regcheck:add=7"], on: ["add"]) { t in
            try assertLoop(t, gives: loopSum { _ in 7 }, "--override add=7")
        }
    }

    // MARK: - replace

    /// Replacements that clobber every caller-saved register, as C functions may: the caller
    /// gets the replacement's return registers — rax; rax:rdx for the pair; xmm0 for the double —
    /// and every other register as it was at the call.
    func testReplaceByClobberingFunctionsKeepsEveryRegisterButTheReturnValue() throws {
        let args = replace("add_leaf", "clobber_add") + replace("pair_leaf", "clobber_pair") + replace("dbl_leaf", "clobber_dbl")
        try withHookit(args, on: leaves) { t in
            try assertAddLeaf(t, gives: 1123, "--replace clobber_add")
            try assertPairLeaf(t, gives: 1123, high: .value(1077), "--replace clobber_pair")
            try assertDblLeaf(t, gives: 1003.75, "--replace clobber_dbl")
        }
    }

    /// A replacement that calls the original through HOOKIT_ORIGINAL, then clobbers everything.
    func testReplaceCallingTheOriginalKeepsEveryRegister() throws {
        try withHookit(replace("add_leaf", "orig_add"), on: ["add_leaf"]) { t in
            try assertAddLeaf(t, gives: 2123, "--replace orig_add")
        }
    }

    /// gcc's loop around `call add` with add replaced by a clobbering C function.
    func testReplaceOfGccCompiledAddKeepsItsCallersLoopRegisters() throws {
        try withHookit(replace("add", "clobber_add"), on: ["add"]) { t in
            try assertLoop(t, gives: loopSum { $0 + 1 + 1000 }, "--replace add=clobber_add")
        }
    }

    /// --keep: the replacements outlive hookit and still keep the caller's registers; a later
    /// hookit takes them over and removes them.
    func testKeptReplacementKeepsRegistersAfterHookitExits() throws {
        let target = try TargetProcess("regcheck")
        try assertOriginal(target, "unhooked")
        let args = replace("add_leaf", "clobber_add") + replace("pair_leaf", "clobber_pair") + replace("dbl_leaf", "clobber_dbl")
        let h = Background(["attach", "\(target.pid)", "--json", "--keep"] + args)
        try attached(h, target)
        try assertAddLeaf(target, gives: 1123, "--replace --keep, hookit attached")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        XCTAssertEqual(events(out).last?["kept"] as? Int, 3, out)
        XCTAssertTrue(try String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8).contains("TracerPid:\t0\n"))
        try assertAddLeaf(target, gives: 1123, "--replace --keep, hookit gone")
        try assertPairLeaf(target, gives: 1123, high: .value(1077), "--replace --keep, hookit gone")
        try assertDblLeaf(target, gives: 1003.75, "--replace --keep, hookit gone")

        let again = Background(["attach", "\(target.pid)", "--json"] + leaves.flatMap { ["--count", "regcheck:\($0)"] })
        try attached(again, target)
        try assertAddLeaf(target, gives: 123, "taken over by --count")
        XCTAssertEqual(again.finish().status, 0)
        try assertOriginal(target, "after the takeover's detach")
        for f in leaves { XCTAssertTrue(try codeEqualsFile(target, f, in: "regcheck"), "\(f) is as in the file again") }
    }

    // MARK: - paths that call the original or resume it

    /// A fexit C program (the call-original path with the vector state saved).
    func testFexitProgramKeepsEveryRegister() throws {
        try transparent((leaves + ["add"]).flatMap { prog("fexit", $0, "record_exit") }, "fexit record_exit") { out in
            self.assertStats(out, kind: "fexit")
        }
    }

    /// C programs that change vector registers (clobber_vectors), on both paths: their images
    /// save the vector state, where those of record_exit and count_entry (proven to use general
    /// registers only) save none.
    func testVectorClobberingProgramsKeepEveryRegister() throws {
        let args = leaves.flatMap { prog("fexit", $0, "clobber_vectors") } + prog("fentry", "add", "clobber_vectors")
        try transparent(args, "fexit/fentry clobber_vectors") { out in
            self.assertStats(out, kind: nil)
        }
    }

    /// fmod_ret that lets the function run (pass_through returns 0) and fentry C programs.
    func testFmodRetPassAndFentryProgramsKeepEveryRegister() throws {
        let args = prog("fmod_ret", "add_leaf", "pass_through") + prog("fentry", "pair_leaf", "count_entry")
            + prog("fmod_ret", "dbl_leaf", "pass_through") + prog("fentry", "add", "count_entry")
        try transparent(args, "fmod_ret pass_through / fentry count_entry") { out in
            self.assertStats(out, kind: nil)
        }
    }

    /// --count, timed (hookit's runtime fentry/fexit programs, no vector state saved).
    func testTimedCountKeepsEveryRegister() throws {
        try transparent((leaves + ["add"]).flatMap { ["--count", "regcheck:\($0)"] }, "--count") { out in
            self.assertStats(out, kind: "count")
        }
    }

    /// --trace (hookit's runtime trace programs).
    func testTraceKeepsEveryRegister() throws {
        try transparent((leaves + ["add"]).flatMap { ["--trace", "regcheck:\($0)"] }, "--trace") { out in
            let all = self.events(out)
            for f in self.leaves {
                XCTAssertEqual(all.filter { $0["event"] as? String == "call" && $0["function"] as? String == "regcheck:\(f)" }.count, 1,
                               "\(f) traced once: the hook was live")
            }
            let detached = all.last { $0["event"] as? String == "detached" }
            XCTAssertEqual((detached?["traced"] as? Int ?? 0) + (detached?["dropped"] as? Int ?? 0), 3 + self.loopN, out.suffix(500).description)
        }
    }

    // MARK: - live changes while a thread runs the probes

    /// A thread calls the probes at full speed while a session adds and removes counts, fentry
    /// and fexit programs on the leaves (every change a new image, the old one retired with the
    /// thread in or near it): no register ever changes.
    func testLiveSwapsOfCountsAndProgramsWhileTheLeavesRunKeepEveryRegister() throws {
        try live { hookit, target in
            let count = try added(hookit, "add " + leaves.map { "--count regcheck:\($0)" }.joined(separator: " "))
            for round in 0..<4 {
                let fexit = try added(hookit, "add " + (prog("fexit", "add_leaf", "record_exit") + prog("fexit", "dbl_leaf", "record_exit")).joined(separator: " "))
                let fentry = try added(hookit, "add " + prog("fentry", "pair_leaf", "count_entry").joined(separator: " "))
                try assertAddLeaf(target, gives: 123, "round \(round), counts + fexit + fentry")
                try removed(hookit, fexit)
                try assertPairLeaf(target, gives: 123, high: .value(77), "round \(round), counts + fentry")
                try removed(hookit, fentry)
            }
            try assertCalledWhileHooked(hookit, count)
            try removed(hookit, count)
        }
    }

    /// The same with the paths issue 12 is about: an override and a fmod_ret skip, and
    /// clobbering replacements (one calling the original), each added and removed live.
    func testLiveSwapsOfOverridesSkipsAndReplacementsWhileTheLeavesRunKeepEveryRegister() throws {
        try live { hookit, target in
            let count = try added(hookit, "add --count regcheck:dbl_leaf")
            for round in 0..<3 {
                var id = try added(hookit, "add --override regcheck:add_leaf=7")
                try assertAddLeaf(target, gives: 7, "round \(round), --override")
                try removed(hookit, id)
                id = try added(hookit, "add " + replace("add_leaf", "orig_add").joined(separator: " "))
                try assertAddLeaf(target, gives: 2123, "round \(round), --replace orig_add")
                try removed(hookit, id)
                id = try added(hookit, "add " + replace("pair_leaf", "clobber_pair").joined(separator: " "))
                try assertPairLeaf(target, gives: 1123, high: .value(1077), "round \(round), --replace clobber_pair")
                try removed(hookit, id)
                id = try added(hookit, "add " + prog("fmod_ret", "dbl_leaf", "skip_with_42").joined(separator: " "))
                try assertDblLeaf(target, gives: 1.5, "round \(round), fmod_ret skip_with_42")
                try removed(hookit, id)
            }
            try assertCalledWhileHooked(hookit, count)
            try removed(hookit, count)
        }
    }

    // MARK: - helpers: hook options

    private func prog(_ kind: String, _ function: String, _ symbol: String) -> [String] {
        ["--prog", "\(kind):regcheck:\(function)=\(progs):\(symbol)"]
    }

    private func replace(_ function: String, _ symbol: String) -> [String] {
        ["--replace", "regcheck:\(function)=\(replacements):\(symbol)"]
    }

    // MARK: - helpers: sessions

    /// Starts regcheck and checks its unhooked answers (so no test passes vacuously), runs
    /// `hookit attach PID --json ARGS`, runs `whileHooked`, detaches (SIGINT), and checks that
    /// every function hooked was hooked, the target answers as before, and `functions`' code
    /// equals the file. Returns hookit's output.
    @discardableResult
    private func withHookit(_ args: [String], on functions: [String], _ whileHooked: (TargetProcess) throws -> Void) throws -> String {
        let target = try TargetProcess("regcheck")
        try assertOriginal(target, "unhooked")
        let h = Background(["attach", "\(target.pid)", "--json"] + args)
        try attached(h, target)
        do { try whileHooked(target) } catch {
            target.kill()           // a hung loop must not keep spinning
            _ = h.finish()
            throw error
        }
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, String(out.suffix(800)))
        let report = events(out).first { $0["event"] as? String == "attached" }
        XCTAssertEqual(report?["functions"] as? Int, functions.count, "every function hooked: \(out.prefix(800))")
        XCTAssertEqual(report?["refused"] as? Int, 0, String(out.prefix(800)))
        try assertOriginal(target, "after detach")
        for f in functions { XCTAssertTrue(try codeEqualsFile(target, f, in: "regcheck"), "\(f) is as in the file after detach") }
        return out
    }

    /// A mode that must not change any result: every check gives the original's answer while
    /// hooked; `proof` then checks in hookit's output that the hooks ran.
    private func transparent(_ args: [String], _ mode: String, proof: (String) -> Void) throws {
        let out = try withHookit(args, on: leaves + ["add"]) { t in
            try assertOriginal(t, mode)
        }
        proof(out)
    }

    /// Per-function `stats` events of hookit's detach: each leaf ran once through its hook and
    /// add loopN times (kind: only the links of that kind; nil: any).
    private func assertStats(_ out: String, kind: String?, file: StaticString = #filePath, line: UInt = #line) {
        let stats = events(out).filter { $0["event"] as? String == "stats" && (kind == nil || $0["kind"] as? String == kind) }
        for (f, calls) in leaves.map({ ($0, 1) }) + [("add", loopN)] {
            let s = stats.first { $0["function"] as? String == "regcheck:\(f)" }
            XCTAssertEqual(s?["calls"] as? Int, calls, "\(f): the hook ran\n\(out.suffix(1500))", file: file, line: line)
        }
    }

    /// regcheck spinning the probes on a second thread, and an interactive session on it; `body`
    /// changes hooks live. Afterwards: the spin thread saw no register change and no impossible
    /// result, the session detaches, and the code equals the file.
    private func live(_ body: (_ hookit: TargetProcess, _ target: TargetProcess) throws -> Void) throws {
        let target = try TargetProcess("regcheck")
        try assertOriginal(target, "unhooked")
        XCTAssertEqual(try target.send("spin"), "spinning")
        let before = try spinStats(target, atLeast: 10_000)
        XCTAssertEqual(before.mask, 0, "spin, unhooked: \(registers(before.mask))")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        XCTAssertEqual(try event(try hookit.readLine(timeout: 20))["event"] as? String, "attached")
        try body(hookit, target)
        let during = try spinStats(target, atLeast: 1)
        XCTAssertGreaterThan(during.iterations, 10_000, "the spin thread ran through the changes")
        XCTAssertEqual(during.mask, 0, "the spin thread saw \(registers(during.mask)) change (mask \(hex(during.mask)))")
        XCTAssertEqual(during.wrong, 0, "results no hook gives")
        hookit.closeInput()
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        XCTAssertEqual(try target.send("spinstop"), "stopped")
        try assertOriginal(target, "after detach")
        for f in leaves { XCTAssertTrue(try codeEqualsFile(target, f, in: "regcheck"), "\(f) is as in the file after detach") }
    }

    private func event(_ line: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], line)
    }

    /// The session's reply to `command` (trace events may come between replies: skipped).
    private func reply(_ hookit: TargetProcess, to command: String) throws -> [String: Any] {
        try hookit.write(command)
        while true {
            let e = try event(try hookit.readLine(timeout: 20))
            if e["event"] as? String != "call" { return e }
        }
    }

    /// `add ...` in the session; the new hook's id.
    private func added(_ hookit: TargetProcess, _ command: String, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let r = try reply(hookit, to: command)
        XCTAssertEqual(r["event"] as? String, "added", "\(command): \(r)", file: file, line: line)
        return try XCTUnwrap(r["id"] as? Int, "\(command): \(r)", file: file, line: line)
    }

    private func removed(_ hookit: TargetProcess, _ id: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try reply(hookit, to: "remove \(id)")
        XCTAssertEqual(r["event"] as? String, "removed", "\(r)", file: file, line: line)
    }

    /// The hook `id` counted calls: the spin thread ran through it while it was live.
    private func assertCalledWhileHooked(_ hookit: TargetProcess, _ id: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let hooks = try XCTUnwrap(try reply(hookit, to: "list")["hooks"] as? [[String: Any]])
        let calls = hooks.first { $0["id"] as? Int == id }?["calls"] as? Int ?? 0
        XCTAssertGreaterThan(calls, 1000, "the spin thread called through the hooks: \(hooks)", file: file, line: line)
    }

    /// spinstat until the spin thread has made at least `n` iterations since the last spinstat
    /// (each spinstat resets the counters; these add them up).
    private func spinStats(_ t: TargetProcess, atLeast n: Int) throws -> (iterations: Int, mask: UInt64, wrong: Int) {
        var total = (iterations: 0, mask: UInt64(0), wrong: 0)
        let end = now() + 20
        while true {
            let f = try t.send("spinstat").split(separator: " ")
            guard f.count == 3, let i = Int(f[0]), let m = mask(f[1]), let w = Int(f[2]) else { throw TestError("spinstat: \(f)") }
            total.iterations += i; total.mask |= m; total.wrong += w
            if total.iterations >= n || now() > end { return total }
            usleep(10_000)
        }
    }

    // MARK: - helpers: checks

    /// How the caller's rdx must come back from pair_leaf.
    private enum High {
        case value(Int)
        /// Unchanged: a skip whose program did not set ctx->ret_hi.
        case callersRDX
    }

    /// The mask bits (regcheck.c's dump order; `regnames` prints the same).
    private static let gprNames = ["rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rsp"]

    private func registers(_ mask: UInt64) -> String {
        let names = (0..<64).filter { mask >> UInt64($0) & 1 != 0 }.map { i -> String in
            i < Self.gprNames.count ? Self.gprNames[i] : i >= 16 && i < 32 ? "xmm\(i - 16)" : "bit\(i)"
        }
        return names.isEmpty ? "nothing" : names.joined(separator: " ")
    }

    private func hex(_ m: UInt64) -> String { "0x" + String(m, radix: 16) }

    /// regcheck prints masks with %#lx: "0", or "0x..." otherwise.
    private func mask(_ s: Substring) -> UInt64? { s == "0" ? 0 : s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : nil }

    private func maskMessage(_ what: String, _ m: UInt64) -> String {
        "\(what) changed \(registers(m)) (mask \(hex(m))), which the original leaves alone"
    }

    /// Runs one checker command ("MASK RESULT..."): asserts the mask is 0, returns the fields,
    /// or nil (a failure recorded) when the answer has not `fields` fields.
    private func probe(_ t: TargetProcess, _ command: String, fields: Int, _ what: String,
                       file: StaticString, line: UInt) throws -> [Substring]? {
        let f = try t.send(command).split(separator: " ")
        guard f.count == fields, let m = mask(f[0]) else {
            XCTFail("\(what): \(command) answered \(f)", file: file, line: line)
            return nil
        }
        XCTAssertEqual(m, 0, maskMessage(what, m), file: file, line: line)
        return f
    }

    /// check_add 100 23: nothing but rax changed, and rax is `expected`.
    private func assertAddLeaf(_ t: TargetProcess, gives expected: Int, _ mode: String,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        guard let f = try probe(t, "check_add 100 23", fields: 2, "\(mode): add_leaf(100, 23)", file: file, line: line) else { return }
        XCTAssertEqual(Int(f[1]), expected, "\(mode): add_leaf(100, 23) returned", file: file, line: line)
    }

    /// check_pair 100 23: nothing but rax and rdx changed; rax is `expected`, rdx as `high` says.
    private func assertPairLeaf(_ t: TargetProcess, gives expected: Int, high: High, _ mode: String,
                                file: StaticString = #filePath, line: UInt = #line) throws {
        guard let f = try probe(t, "check_pair 100 23", fields: 4, "\(mode): pair_leaf(100, 23)", file: file, line: line) else { return }
        XCTAssertEqual(Int(f[1]), expected, "\(mode): pair_leaf(100, 23) returned rax", file: file, line: line)
        switch high {
        case .value(let v):
            XCTAssertEqual(Int(f[2]), v, "\(mode): pair_leaf(100, 23) returned rdx", file: file, line: line)
        case .callersRDX:
            XCTAssertEqual(f[2], f[3], "\(mode): rdx after pair_leaf(100, 23) is the caller's \(f[3]) (ret_hi was not set)",
                           file: file, line: line)
        }
    }

    /// check_dbl 1.5 2.25: nothing but rax and xmm0 changed (xmm1, an argument, included), and
    /// xmm0 is `expected`.
    private func assertDblLeaf(_ t: TargetProcess, gives expected: Double, _ mode: String,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        guard let f = try probe(t, "check_dbl 1.5 2.25", fields: 2, "\(mode): dbl_leaf(1.5, 2.25)", file: file, line: line) else { return }
        XCTAssertEqual(Double(f[1]), expected, "\(mode): dbl_leaf(1.5, 2.25) returned", file: file, line: line)
    }

    /// loop 1000 answers `expected` within 5 s (it takes well under a millisecond, hooked or not).
    private func assertLoop(_ t: TargetProcess, gives expected: Int, _ mode: String,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let sum: String
        do { sum = try t.send("loop \(loopN)", timeout: 5) } catch {
            throw TestError("\(mode): loop \(loopN) did not answer within 5 s: sum_loop's countdown, kept in rdx across "
                            + "`call add`, was broken (\(error))")
        }
        XCTAssertEqual(Int(sum), expected, "\(mode): sum_loop(\(loopN)), gcc's code keeping rdx, rcx, xmm0, xmm1 across the call",
                       file: file, line: line)
    }

    /// Every check gives the original's answer and changes nothing else.
    private func assertOriginal(_ t: TargetProcess, _ mode: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try assertAddLeaf(t, gives: 123, mode, file: file, line: line)
        try assertPairLeaf(t, gives: 123, high: .value(77), mode, file: file, line: line)
        try assertDblLeaf(t, gives: 3.75, mode, file: file, line: line)
        try assertLoop(t, gives: loopSum { $0 + 1 }, mode, file: file, line: line)
    }
}
