import Foundation
import Glibc
import TestSupport
import XCTest

/// A hookit running in the background whose output is read all the time on another thread
/// (a hookit blocked on a full pipe would make the test measure the pipe).
final class Background {
    let pid: pid_t
    private let fd: Int32
    private var data: [UInt8] = []
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)

    init(_ args: [String]) {
        (pid, fd) = spawnBackground([Repo.hookit] + args)
        let fd = self.fd
        Thread.detachNewThread { [self] in
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                lock.lock(); data += chunk[..<n]; lock.unlock()
            }
            done.signal()
        }
    }

    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }

    func waitFor(_ needle: String, timeout: Double = 20) -> Bool { waitFor([needle], timeout: timeout) }

    /// Until the output holds any of the needles.
    func waitFor(_ needles: [String], timeout: Double = 20) -> Bool {
        let end = now() + timeout
        while now() < end {
            let t = text
            if needles.contains(where: { t.contains($0) }) { return true }
            usleep(20_000)
        }
        return false
    }

    /// Signals hookit (nil: lets it end by itself), waits for its output to end and for it.
    func finish(_ sig: Int32? = SIGINT, timeout: Double = 60) -> (status: Int32, output: String) {
        if let s = sig { kill(pid, s) }
        if done.wait(timeout: .now() + timeout) == .timedOut { kill(pid, SIGKILL) }
        let status = TestSupport.waitFor(pid)
        close(fd)
        return (status, text)
    }
}

extension XCTestCase {
    /// The JSON lines of hookit's output (`--json`), one event each.
    func events(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Until hookit reports it attached (and its hooks are live); throws with its output if not.
    func attached(_ h: Background, _ target: TargetProcess) throws {
        guard h.waitFor(["\"event\":\"attached\"", "attached "]) else {
            let r = h.finish(SIGKILL)
            throw TestError("hookit did not attach to \(target.pid): \(r.output)")
        }
    }
}
