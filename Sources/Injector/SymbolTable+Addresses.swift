extension SymbolTable {
    /// The function holding `address`, and the offset into it: `module:function+0xOFF` (a
    /// return address names its call site so). An address in no function is `module+0xOFF`
    /// from the module's start, or hex when no module maps it.
    public func name(of address: UInt64) -> String {
        guard let module = modules.first(where: { $0.contains(address) }) else { return "0x" + String(address, radix: 16) }
        let functions = functions(in: module)
        var lo = 0, hi = functions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if functions[mid].address <= address { lo = mid + 1 } else { hi = mid }
        }
        if lo > 0 {
            let f = functions[lo - 1]
            if address < f.address &+ max(f.size, 1) { return "\(named(f).label)+0x\(String(address - f.address, radix: 16))" }
        }
        return "\(module.name)+0x\(String(address - module.start, radix: 16))"
    }
}
