import Injector
import TestSupport
import XCTest

/// Memory of modules a process can never unload (the executable and its DT_NEEDED closure),
/// where the runtime may read strings with plain loads.
final class PermanentModulesTests: XCTestCase {
    func testTheExecutableAndItsLibrariesArePermanentAndADlopenedOneIsNot() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("load \(Repo.target("libplugin.so"))"), "loaded")
        let symbols = try SymbolTable(pid: target.pid)
        let ranges = symbols.permanentRanges()
        func permanent(_ pattern: String) throws -> Bool {
            let a = try symbols.function(pattern).address
            return ranges.contains { $0.contains(a) }
        }
        XCTAssertTrue(try permanent("hooktarget:add"))
        XCTAssertTrue(try permanent("libc.so.6:strlen"))
        XCTAssertFalse(try permanent("libplugin.so:plugin_answer"), "dlopen'd: dlclose may unmap it")
        XCTAssertEqual(ranges, ranges.sorted { $0.lowerBound < $1.lowerBound })
    }
}
