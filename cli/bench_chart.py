"""The sweep's chart: achieved seals/s and p50/p99 latency against offered load, as SVG.

matplotlib (the `bench` extra) with the Agg backend: no display, no GUI toolkit, the same file on a CI
runner as on a laptop. Without matplotlib, a small hand-written SVG with the same two panels.
"""

from __future__ import annotations

import html
from pathlib import Path


def write_sweep_chart(points: list[dict], path: Path, title: str) -> str:
    """Write the chart; returns which renderer made it ("matplotlib" or "plain svg")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    offered = [p["offered_per_s"] for p in points]
    achieved = [p["seals_per_s"] for p in points]
    p50 = [p["p50_ms"] for p in points]
    p99 = [p["p99_ms"] for p in points]
    try:
        import matplotlib

        matplotlib.use("Agg")
        # Text as text (not glyph outlines) and fixed element ids: a small SVG that diffs cleanly.
        matplotlib.rcParams["svg.fonttype"] = "none"
        matplotlib.rcParams["svg.hashsalt"] = "fiscal-bench"
        import matplotlib.pyplot as plt
    except ImportError:
        path.write_text(_plain_svg(offered, achieved, p50, p99, title))
        return "plain svg"
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    top = max(offered + achieved + [1.0]) * 1.05
    left.plot([0, top], [0, top], linestyle=":", color="grey", label="achieved = offered")
    left.plot(offered, achieved, marker="o", label="achieved (200s/s)")
    left.set(xlabel="offered seals/s", ylabel="achieved seals/s", title="throughput", xlim=(0, top), ylim=(0, top))
    left.legend(loc="upper left")
    right.plot(offered, p50, marker="o", label="p50")
    right.plot(offered, p99, marker="s", label="p99")
    right.set(xlabel="offered seals/s", ylabel="latency ms (from scheduled send)", title="latency", yscale="log")
    right.legend(loc="upper left")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)
    return "matplotlib"


def _plain_svg(offered: list[float], achieved: list[float], p50: list[float], p99: list[float], title: str) -> str:
    width, height, pad = 440, 300, 50
    x_top = max(offered + achieved + [1.0]) * 1.05

    def panel(dx: int, series: list[tuple[str, list[float], str]], y_top: float, label: str) -> str:
        def xy(x: float, y: float) -> str:
            return f"{dx + pad + x / x_top * (width - 2 * pad):.1f},{height - pad - y / y_top * (height - 2 * pad):.1f}"

        out = [f'<rect x="{dx + pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" '
               'stroke="#999"/>',
               f'<text x="{dx + width / 2}" y="{height - 12}" text-anchor="middle">offered seals/s (max {x_top:.0f})</text>',
               f'<text x="{dx + 10}" y="{pad - 10}">{html.escape(label)} (max {y_top:.0f})</text>']
        for index, (name, values, colour) in enumerate(series):
            points = " ".join(xy(x, y) for x, y in zip(offered, values, strict=True))
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
            out.append(f'<text x="{dx + pad + 8}" y="{pad + 16 + 14 * index}" fill="{colour}">{html.escape(name)}</text>')
        return "\n".join(out)

    body = [panel(0, [("achieved", achieved, "#1f77b4"), ("offered", offered, "#999")], x_top, "seals/s"),
            panel(width, [("p50 ms", p50, "#2ca02c"), ("p99 ms", p99, "#d62728")], max(p99 + [1.0]) * 1.05,
                  "latency ms")]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height + 20}" '
            f'font-family="sans-serif" font-size="12"><title>{html.escape(title)}</title>\n'
            + "\n".join(body) + "\n</svg>\n")
