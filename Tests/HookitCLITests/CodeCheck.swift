import CPtrace
import Foundation
import Glibc
import TestSupport

/// Whether a function of a test target (hooktarget unless `module` says otherwise), as the
/// running target holds it, equals the ELF file: what a complete detach must leave. (The
/// targets are PIEs with .text at vaddr == file offset.)
func codeEqualsFile(_ target: TargetProcess, _ function: String, in module: String = "hooktarget") throws -> Bool {
    let r = runProgram([Repo.hookit, "symbols", "\(target.pid)", "\(module):\(function)"])
    let f = r.output.split(separator: " ")
    let address = UInt64(f[0].dropFirst(2), radix: 16)!, size = Int(f[1])!
    var live = [UInt8](repeating: 0, count: size)
    let n = live.withUnsafeMutableBytes { hk_vm_read(target.pid, address, $0.baseAddress, size) }
    guard n == size else { throw TestError("process_vm_readv at 0x\(String(address, radix: 16)) failed") }
    let exe = try Data(contentsOf: URL(fileURLWithPath: Repo.target(module)))
    let nm = runProgram(["/usr/bin/nm", Repo.target(module)]).output
    let value = nm.split(separator: "\n").first { $0.hasSuffix(" T \(function)") }!.split(separator: " ")[0]
    let offset = Int(UInt64(value, radix: 16)!)
    return Array(exe[offset..<offset + size]) == live
}
