import Foundation
import Glibc
import TestSupport
import XCTest

/// A live python3 (Debian's, stripped, libc/libz/libcrypto from the system) running a workload
/// that prints a checksum: with every function of libc hookit accepts hooked, and libz's and
/// libcrypto's digest functions, it prints exactly what it prints unhooked.
final class PythonTests: XCTestCase {
    private let python = "/usr/bin/python3"

    /// Sorting, floats, zlib, hashlib (OpenSSL), json, re, files in a temp dir, threads,
    /// strftime, realpath: a little of everything a Python program asks of its libraries.
    private let script = #"""
    import hashlib, json, os, random, re, struct, sys, tempfile, threading, time, zlib

    def workload():
        h = hashlib.sha256()
        rnd = random.Random(1234)
        data = sorted(rnd.random() for _ in range(20000))
        h.update(struct.pack('%dd' % len(data), *data))
        text = ' '.join(str(x) for x in range(20000)).encode()
        z = zlib.compress(text, 6)
        h.update(z); h.update(zlib.decompress(z)); h.update(b'%d' % zlib.crc32(text))
        h.update(json.dumps({'k': list(range(1000)), 's': 'h\u00e9llo', 'f': 1 / 3}, sort_keys=True).encode())
        h.update(str(re.findall(r'\d{3}7', text.decode())[:50]).encode())
        with tempfile.TemporaryDirectory() as d:
            for i in range(20):
                with open(os.path.join(d, 'f%d' % i), 'wb') as f:
                    f.write(z[i * 100:(i + 1) * 100])
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), 'rb') as f:
                    h.update(name.encode() + f.read())
        results = [0] * 8
        def worker(i):
            results[i] = sum(zlib.crc32(b'%d-%d' % (i, j)) & 0xff for j in range(5000))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        h.update(str(results).encode())
        h.update(time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(86400 * 365)).encode())
        h.update(os.path.realpath('/usr/../usr/lib').encode())
        h.update(hashlib.md5(text).digest() + hashlib.sha1(text).digest())
        return h.hexdigest()

    print('ready', os.getpid(), flush=True)
    for line in sys.stdin:
        if line.strip() == 'run':
            print(workload(), flush=True)
        elif line.strip() == 'quit':
            break
    """#

    func testWorkloadPrintsTheSameChecksumWithAllOfLibcHooked() throws {
        try require(python)
        Repo.buildTargets()
        let dir = TempDir("python")
        try dir.write("workload.py", script)
        let unhooked = runProgram([python, dir.file("workload.py")], stdin: "run\nquit\n")
        XCTAssertEqual(unhooked.status, 0, unhooked.stderr)
        let expected = try XCTUnwrap(unhooked.output.split(separator: "\n").last.map(String.init))
        XCTAssertEqual(expected.count, 64)

        let py = try TargetProcess(path: python, arguments: [dir.file("workload.py")], waitForReady: true)
        XCTAssertEqual(try py.send("run", timeout: 20), expected, "a second interpreter agrees")
        let symbols = listSymbols(py.pid, "libc.so.6:*")
        let started = now()
        // --no-time: plain entry counts (a timed count calls the original from its image).
        let session = try HookitSession(py.pid, ["--count", "libc.so.6:*", "--count", "libz.so.1:*",
                                                 "--count", "libcrypto.so.3:EVP_Digest*", "--no-time"])
        let attachSeconds = now() - started
        for round in 1...3 {
            XCTAssertEqual(try py.send("run", timeout: 20), expected, "round \(round), hooked")
        }
        session.detach()
        XCTAssertEqual(try py.send("run", timeout: 20), expected, "after detach")

        let attached = try XCTUnwrap(session.event("attached"))
        let detached = try XCTUnwrap(session.event("detached"))
        XCTAssertEqual(detached["restored"] as? Int, attached["functions"] as? Int)
        XCTAssertEqual((detached["left_mapped"] as? [Any])?.count, 0)
        let calls = session.calls
        let libc = calls.filter { $0.key.hasPrefix("libc.so.6:") }
        let libz = calls.filter { $0.key.hasPrefix("libz.so.1") }.values.reduce(0, +)
        let digest = calls.filter { $0.key.hasPrefix("libcrypto.so.3:") }.values.reduce(0, +)
        print("python3: \(attached["functions"] ?? 0) functions hooked in \(String(format: "%.2f", attachSeconds)) s "
              + "(world stopped \(attached["stopped_ns"] ?? 0) ns); libc calls \(libc.values.reduce(0, +)) in \(libc.filter { $0.value > 0 }.count) functions, "
              + "libz \(libz), EVP_Digest* \(digest); top: \(libc.sorted { $0.value > $1.value }.prefix(8).map { "\($0.key)=\($0.value)" })")
        XCTAssertGreaterThan(attached["functions"] as? Int ?? 0, 1500)
        XCTAssertGreaterThanOrEqual(calls["libc.so.6:malloc"] ?? 0, 1000)
        XCTAssertGreaterThanOrEqual(calls["libc.so.6:pthread_create"] ?? 0, 24, "8 threads per round")
        XCTAssertGreaterThanOrEqual(calls.first { $0.key.hasPrefix("libz.so.1") && $0.key.hasSuffix(":crc32") }?.value ?? 0, 3 * 40001, "crc32 per round: 40,000 in threads + 1")
        XCTAssertGreaterThanOrEqual(digest, 3 * 3, "three digests a round")
        refusalReport("python3", pid: py.pid, pattern: "libc.so.6:*", session: session, symbols: symbols)
        for module in ["libc.so.6", "libz.so.1", "libcrypto.so.3"] {
            XCTAssertNoThrow(try moduleCodeEqualsFile(pid: py.pid, module: module), "\(module) is as its file")
        }
        try py.write("quit")
        XCTAssertEqual(py.waitExit(timeout: 5), 0, "python exits normally")
    }
}
