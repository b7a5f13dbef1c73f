import Injector

/// One image of a trampoline: code in a page near the module, numbered like the seed's
/// `selector`, with the addresses retirement needs (the seed's ip_after_call / ip_epilogue).
struct Image {
    let address: UInt64
    let size: Int
    let selector: Int
    /// Counts threads between the image's entry and its exit (the seed's percpu_ref), a
    /// PerCPUCounters index: a thread inside a program or inside the original called from the
    /// image is still "in" the image. nil for images a thread is only ever in by its PC.
    let inflightCounter: Int?
    let afterCall: UInt64?
    let epilogue: UInt64?

    var range: Range<UInt64> { address..<address + UInt64(size) }
}

/// The trampoline of one function (the seed's struct bpf_trampoline): its patch site, its
/// program lists per kind in attach order, and its current image.
final class Trampoline {
    let site: PatchSite
    var links: [ProgramKind: [Link]] = [:]
    private(set) var image: Image?
    private(set) var selector = 0
    /// The relocated prologue (relocated style only), allocated once, shared by every image.
    let relocatedBlock: Range<UInt64>?
    /// Where "call the original" goes.
    let originalEntry: UInt64
    /// Set when the lists changed since the image was built.
    var dirty = false

    init(site: PatchSite, relocatedBlock: Range<UInt64>?, originalEntry: UInt64) {
        self.site = site
        self.relocatedBlock = relocatedBlock
        self.originalEntry = originalEntry
    }

    var programCount: Int { links.values.reduce(0) { $0 + $1.count } }
    var label: String { site.label }

    /// The bytes at the patch site when `image` is live.
    func patchBytes(for image: Image) -> [UInt8] {
        EntryPatch.jmp(from: site.address, to: image.address)
    }

    /// The bytes at the patch site now.
    var currentBytes: [UInt8] { image.map(patchBytes(for:)) ?? unpatchedBytes }

    /// The site's bytes while no image of this session is live: a killed hookit's patch until
    /// the first poke replaces it, the file's bytes after.
    lazy var unpatchedBytes: [UInt8] = site.found

    func install(_ new: Image?) -> Image? {
        let old = image
        image = new
        if new != nil { selector += 1 }
        return old
    }

    /// A PC strictly inside the bytes about to be rewritten, moved to the instruction that
    /// does the same thing: past the nop, or into the relocated copy of the prologue.
    func translate(_ pc: UInt64) -> UInt64? {
        switch site.style {
        case .patchable:
            return site.afterPatch
        case .relocated(let prologue, _, _):
            guard let block = relocatedBlock else { return nil }
            let offset = Int(pc - (site.function.address + UInt64(prologue.patchOffset)))
            guard let m = prologue.pcMap.first(where: { $0.original == offset }) else { return nil }
            return block.lowerBound + UInt64(m.relocated)
        }
    }
}
