import Foundation
import TestSupport
import XCTest
@testable import RemoteTramp

/// The image builder writes struct hookit_ctx by offset: those offsets must be the C compiler's
/// for include/hookit.h, which programs are built against.
final class ContextLayoutTests: XCTestCase {
    func testImageBuilderOffsetsAreThoseOfHookitH() throws {
        let dir = NSTemporaryDirectory() + "hookit-ctx-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = """
            #include <stddef.h>
            #include <stdio.h>
            #include "hookit.h"
            int main(void) {
                printf("%zu %zu %zu %zu %zu %zu %zu %zu %zu %zu\\n", offsetof(struct hookit_ctx, args),
                       offsetof(struct hookit_ctx, ret), offsetof(struct hookit_ctx, func_ip),
                       offsetof(struct hookit_ctx, cookie), offsetof(struct hookit_ctx, ret_hi),
                       offsetof(struct hookit_ctx, entry_sp), offsetof(struct hookit_ctx, nvec),
                       offsetof(struct hookit_ctx, xmm_args), offsetof(struct hookit_ctx, xmm_ret),
                       offsetof(struct hookit_ctx, scratch));
                printf("%zu\\n", sizeof(struct hookit_ctx));
                return 0;
            }
            """
        try source.write(toFile: dir + "/ctx.c", atomically: true, encoding: .utf8)
        let cc = Process()
        cc.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
        cc.arguments = ["-I\(Repo.root)/include", "-o", dir + "/ctx", dir + "/ctx.c"]
        try cc.run()
        cc.waitUntilExit()
        XCTAssertEqual(cc.terminationStatus, 0, "cc failed")
        let run = Process()
        let out = Pipe()
        run.executableURL = URL(fileURLWithPath: dir + "/ctx")
        run.standardOutput = out
        try run.run()
        run.waitUntilExit()
        let lines = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        let offsets = lines[0].split(separator: " ").compactMap { Int32($0) }
        let B = ImageBuilder.self
        XCTAssertEqual(offsets, [0, B.ctxRet, B.ctxFuncIP, B.ctxCookie, B.ctxRetHi, B.ctxEntrySP, B.ctxNvec,
                                 B.ctxXmmArgs, B.ctxXmmRet, B.ctxScratch])
        XCTAssertEqual(Int32(lines[1]), -B.ctxBase, "the frame holds exactly one struct hookit_ctx")
    }
}
