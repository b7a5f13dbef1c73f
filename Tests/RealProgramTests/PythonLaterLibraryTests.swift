import Foundation
import Glibc
import TestSupport
import XCTest

/// Debian's python3 imports bz2 after hookit attached: `_bz2`'s dlopen brings libbz2 in, and
/// `--count 'libbz2.so*:*'` (pending until then) counts what the compressions did (issue 17).
final class PythonLaterLibraryTests: XCTestCase {
    private let python = "/usr/bin/python3"

    private let script = #"""
    import os, sys
    print('ready', os.getpid(), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[0] == 'import':
            import bz2
            print('imported', flush=True)
        elif words[0] == 'compress':
            data = bytes(range(256)) * 4096
            sizes = [len(bz2.compress(data, 9)) for _ in range(int(words[1]))]
            print('compressed', len(sizes), flush=True)
        elif words[0] == 'quit':
            break
    """#

    func testBz2ImportedAfterAttachIsCountedFromItsFirstCall() throws {
        try require(python)
        let dir = TempDir("pybz2")
        try dir.write("bz.py", script)
        let py = try TargetProcess(path: python, arguments: [dir.file("bz.py")], waitForReady: true)
        let maps = try readProc("/proc/\(py.pid)/maps")
        XCTAssertFalse(maps.contains("libbz2"), "libbz2 must come in later")
        let session = try HookitSession(py.pid, ["--count", "libbz2.so*:*", "--trace", "libbz2.so*:BZ2_bzCompress*"])
        XCTAssertEqual(session.event("pending")?["request"] as? String, "--count libbz2.so*:*", session.printed)
        XCTAssertEqual(try py.send("import", timeout: 20), "imported")
        XCTAssertEqual(try py.send("compress 6", timeout: 60), "compressed 6")
        session.detach()
        XCTAssertEqual(try py.send("compress 1", timeout: 60), "compressed 1", "python runs on after detach")

        let loaded = try XCTUnwrap(session.events.first { $0["event"] as? String == "loaded" && ($0["module"] as? String ?? "").hasPrefix("libbz2") }, session.printed)
        XCTAssertGreaterThan(loaded["functions"] as? Int ?? 0, 10, session.printed)
        let calls = session.calls
        // bz2.compress is one BZ2_bzCompressInit, BZ2_bzCompress until BZ_STREAM_END, one
        // BZ2_bzCompressEnd: 6 compressions of 1 MiB at level 9 (900 kB blocks) are 6 of each
        // and at least 2 blocks sorted each.
        XCTAssertEqual(calls["libbz2.so.1.0.4:BZ2_bzCompressInit"], 6, session.printed)
        XCTAssertEqual(calls["libbz2.so.1.0.4:BZ2_bzCompressEnd"], 6, session.printed)
        XCTAssertGreaterThanOrEqual(calls["libbz2.so.1.0.4:BZ2_bzCompress"] ?? 0, 6, session.printed)
        XCTAssertGreaterThanOrEqual(calls["libbz2.so.1.0.4:BZ2_compressBlock"] ?? 0, 12, session.printed)
        let detached = try XCTUnwrap(session.event("detached"))
        XCTAssertEqual((detached["pending"] as? [String])?.count, 0, session.printed)
        // Nothing lost: the traced BZ2_bzCompress* calls and the dropped ones are the counted ones.
        let traced = session.events.filter { $0["event"] as? String == "call" }
        let counted = calls.filter { $0.key.hasPrefix("libbz2.so.1.0.4:BZ2_bzCompress") }.values.reduce(0, +)
        XCTAssertEqual(traced.count + (detached["dropped"] as? Int ?? -1), counted, session.printed)
        XCTAssertEqual(traced.filter { $0["ended"] as? String == "returned" }.count, traced.count)
    }
}
