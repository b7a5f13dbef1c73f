"""A horizontal bar chart of per-call cost on a log scale, as plain SVG (no plotting library)."""
import math


def overhead_svg(rows, path, threads=1):
    rows = [r for r in rows if r["threads"] == threads and r.get("ns") and "again" not in r["config"]]
    if not rows:
        return
    label_w, bar_w, row_h, top = 380, 520, 26, 50
    lo = 10 ** math.floor(math.log10(min(r["ns"] for r in rows)))
    hi = 10 ** math.ceil(math.log10(max(r["ns"] for r in rows)))
    span = math.log10(hi) - math.log10(lo) or 1

    def x(v):
        return label_w + bar_w * (math.log10(v) - math.log10(lo)) / span

    height = top + row_h * len(rows) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 40}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="22" font-size="15">Time per call of bench_fn, {threads} thread (ns, log scale; lower is better)</text>']
    decade = lo
    while decade <= hi:
        out.append(f'<line x1="{x(decade):.1f}" y1="{top - 8}" x2="{x(decade):.1f}" y2="{height - 30}" stroke="#ddd"/>')
        out.append(f'<text x="{x(decade):.1f}" y="{height - 14}" text-anchor="middle">{decade:g}</text>')
        decade *= 10
    for i, r in enumerate(rows):
        y = top + i * row_h
        color = "#2b7bb9" if r["tool"] == "hookit" else "#c0504d"
        label = f'{r["tool"]}: {r["config"]}'
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(1.0, x(r["ns"]) - label_w):.1f}" height="{row_h - 8}" fill="{color}"/>')
        out.append(f'<text x="{x(r["ns"]) + 4:.1f}" y="{y + 15}">{r["ns"]:.1f}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
