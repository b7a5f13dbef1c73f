import Foundation
import Glibc
import TestSupport
import XCTest

/// hookit killed with SIGKILL at random moments of attach, live hooking and detach: the target
/// keeps answering correctly, the next hookit takes over what the dead one left, and the last
/// detach leaves the code equal to the file.
final class KillTrialsTests: XCTestCase {
    func testHundredRandomSIGKILLsThenACleanDetach() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("spinbg 4"), "spinning 4")
        let progs = Repo.target("libprogs.so")
        let args = ["attach", "\(target.pid)", "--count", "hooktarget:add", "--count", "hooktarget:patch5",
                    "--prog", "fexit:hooktarget:jcc_first=\(progs):record_exit", "--duration", "0.04"]
        var generator = SystemRandomNumberGenerator()
        var killedAlive = 0
        for trial in 0..<100 {
            let (pid, out) = spawnBackground([Repo.hookit] + args)
            usleep(UInt32.random(in: 0...120_000, using: &generator))
            if kill(pid, SIGKILL) == 0 { killedAlive += 1 }
            _ = waitFor(pid)
            _ = readAll(out)
            XCTAssertEqual(try target.send("add 2 3"), "5", "trial \(trial)")
            XCTAssertEqual(try target.send("patch5 3"), "9", "trial \(trial)")
            XCTAssertEqual(try target.send("jccfirst 0"), "2", "trial \(trial)")
        }
        XCTAssertGreaterThan(killedAlive, 50, "most trials killed hookit while it was working")
        // A last, clean session takes over whatever is left and restores everything.
        let last = runProgram([Repo.hookit] + args)
        XCTAssertEqual(last.status, 0, last.stderr)
        for f in ["add", "patch5", "jcc_first"] {
            XCTAssertTrue(try codeEqualsFile(target, f), "\(f) equals the file")
        }
        XCTAssertTrue(try target.send("stop").hasPrefix("stopped "))
        XCTAssertEqual(try target.send("spinbad"), "0", "no call ever returned a wrong value")
        XCTAssertEqual(try target.send("regcheck"), "0 7")
    }
}
