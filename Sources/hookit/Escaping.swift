extension String {
    /// The string with each character that `replacements` names written as its replacement: the
    /// escaping of a format (SVG text, Prometheus label values), given as its table.
    func escaping(_ replacements: [Character: String]) -> String {
        var out = ""
        for c in self {
            if let r = replacements[c] { out += r } else { out.append(c) }
        }
        return out
    }
}
