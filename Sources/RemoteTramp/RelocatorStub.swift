// TEMPORARY: replaced by Relocator.swift from the relocator branch.
public struct RelocatedPrologue: Sendable {
    public let patchOffset: Int
    public let displacedLength: Int
    public let code: [UInt8]
    public let pcMap: [(original: Int, relocated: Int)]
}
public enum Relocator {
    public static func relocate(function: [UInt8], trailing: [UInt8], address: UInt64, destination: UInt64) throws -> RelocatedPrologue {
        struct NotYet: Error {}
        throw NotYet()
    }
}
