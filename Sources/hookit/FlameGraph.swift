/// --flamegraph FILE.svg: folded stacks drawn as a flame graph (Brendan Gregg's layout: the
/// outermost frame at the bottom, each frame as wide as its calls, callees stacked above, siblings
/// in name order), with a tooltip per frame. Plain SVG, no script: any browser opens it.
struct FlameGraph {
    private final class Node {
        var calls: UInt64 = 0
        var children: [String: Node] = [:]
    }

    private let root = Node()
    private let title: String
    static let width = 1200.0, frameHeight = 16.0, top = 36.0, margin = 10.0

    init(folded: [String: UInt64], dropped: UInt64, title: String) {
        self.title = title
        var stacks = folded
        if dropped > 0 { stacks["[dropped]", default: 0] += dropped }
        for (stack, calls) in stacks {
            root.calls += calls
            var node = root
            for frame in stack.split(separator: ";") {
                let next = node.children[String(frame)] ?? Node()
                node.children[String(frame)] = next
                next.calls += calls
                node = next
            }
        }
    }

    private var depth: Int {
        func d(_ n: Node) -> Int { 1 + (n.children.values.map(d).max() ?? 0) }
        return d(root) - 1
    }

    var svg: String {
        let height = Self.top + Double(depth + 1) * Self.frameHeight + Self.margin
        var out = """
        <?xml version="1.0" standalone="no"?>
        <svg version="1.1" width="\(Int(Self.width))" height="\(Int(height))" xmlns="http://www.w3.org/2000/svg">
        <style>text { font-family: Verdana, sans-serif; font-size: 12px; fill: #000; } rect { stroke: #fff; stroke-width: 0.5; }</style>
        <rect x="0" y="0" width="\(Int(Self.width))" height="\(Int(height))" fill="#f8f8f0"/>
        <text x="\(Int(Self.width / 2))" y="24" text-anchor="middle" style="font-size:17px">\(Self.escaped("Flame graph: \(title), \(root.calls) call(s)"))</text>

        """
        let scale = (Self.width - 2 * Self.margin) / Double(max(root.calls, 1))
        func draw(_ node: Node, _ name: String, x: Double, level: Int) {
            let w = Double(node.calls) * scale
            guard w >= 0.1 else { return }
            let y = height - Self.margin - Double(level + 1) * Self.frameHeight
            let share = fixed(100 * Double(node.calls) / Double(max(root.calls, 1)), 2)
            let label = Self.escaped("\(name) (\(node.calls) call(s), \(share)%)")
            out += "<g><title>\(label)</title><rect x=\(q(x)) y=\(q(y)) width=\(q(w)) height=\(q(Self.frameHeight - 1)) fill=\"\(Self.color(name))\"/>"
            // About 7 px a character at 12 px.
            let fits = Int((w - 6) / 7)
            if fits >= 3 {
                let text = name.count <= fits ? name : String(name.prefix(fits - 2)) + ".."
                out += "<text x=\(q(x + 3)) y=\(q(y + Self.frameHeight - 4))>\(Self.escaped(text))</text>"
            }
            out += "</g>\n"
            var cx = x
            for (child, n) in node.children.sorted(by: { $0.key < $1.key }) {
                draw(n, child, x: cx, level: level + 1)
                cx += Double(n.calls) * scale
            }
        }
        var x = Self.margin
        for (name, n) in root.children.sorted(by: { $0.key < $1.key }) {
            draw(n, name, x: x, level: 0)
            x += Double(n.calls) * scale
        }
        return out + "</svg>\n"
    }

    private func q(_ v: Double) -> String { "\"\(fixed(v, 1))\"" }

    /// Warm colours, the same for the same name in every graph (FNV-1a of the name).
    static func color(_ name: String) -> String {
        var h: UInt32 = 2166136261
        for b in name.utf8 { h = (h ^ UInt32(b)) &* 16777619 }
        return "rgb(\(205 + h % 50),\(80 + (h >> 8) % 150),\((h >> 16) % 55))"
    }

    static func escaped(_ s: String) -> String {
        s.escaping(["&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"])
    }
}
