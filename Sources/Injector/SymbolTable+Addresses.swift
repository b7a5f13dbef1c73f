extension SymbolTable {
    /// Where `pc` lies: its module, the function holding it (by its shown name) and the offset
    /// into that function (else from the module's load bias); nil when no module maps it. A
    /// return address (`returnAddress`) is looked up one byte back, since a call that ends a
    /// function returns past its end. Aliases give the public (first) name; a symbol without size
    /// covers up to the next one.
    public func location(of pc: UInt64, returnAddress: Bool) -> (module: String, function: String?, offset: UInt64)? {
        let probe = returnAddress ? pc &- 1 : pc
        guard let m = modules.last(where: { !$0.isVDSO && $0.start <= probe && $0.contains(probe) }) else { return nil }
        let functions = functions(in: m)
        var lo = 0, hi = functions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if functions[mid].address <= probe { lo = mid + 1 } else { hi = mid }
        }
        if lo > 0 {
            var i = lo - 1
            while i > 0 && functions[i - 1].address == functions[i].address { i -= 1 }
            let f = functions[i]
            if f.size == 0 || probe < f.address + f.size { return (m.name, named(f).displayName, pc - f.address) }
        }
        return (m.name, nil, pc &- m.bias)
    }

    /// `module:function+0xOFF` (`module+0xOFF` outside any function, `0xPC` outside any module)
    /// for a return address: its call site.
    public func name(ofReturnAddress pc: UInt64) -> String {
        guard let l = location(of: pc, returnAddress: true) else { return "0x" + String(pc, radix: 16) }
        return l.module + (l.function.map { ":\($0)" } ?? "") + "+0x" + String(l.offset, radix: 16)
    }
}
