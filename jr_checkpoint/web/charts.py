"""Charts drawn on the server as inline SVG: no script, no CDN, nothing fetched by the browser.

Every label goes through :func:`markupsafe.escape`; colours come from the page's CSS classes
(``bar-success``, ``bar-failed``, ...) so the light and dark themes restyle them.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

ROW = 22  # px per bar in a horizontal chart
LABEL_WIDTH = 210
BAR_WIDTH = 300
VALUE_WIDTH = 190


def _number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _shorten(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def hbars(title: str, rows: Sequence[tuple[str, float, str]], *, css: str = "bar",
          maximum: float | None = None) -> Markup:
    """One horizontal bar per row: (label, value, text shown after the bar).

    ``maximum``: the value of a full bar (default: the largest value), e.g. 100 for percentages.
    """
    top = maximum if maximum is not None else max((value for _, value, _ in rows), default=0)
    height = ROW * max(len(rows), 1) + 8
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
             f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    if not rows:
        parts.append(f'<text class="chart-label" x="0" y="{ROW - 6}">nothing in this window</text>')
    for i, (label, value, text) in enumerate(rows):
        y = i * ROW + 4
        length = 0 if not top else max(1.0, BAR_WIDTH * value / top) if value else 0
        parts.append(
            f'<g><title>{escape(label)}: {escape(text)}</title>'
            f'<text class="chart-label" x="{LABEL_WIDTH - 8}" y="{y + ROW - 9}" text-anchor="end">'
            f"{escape(_shorten(label))}</text>"
            f'<rect class="{escape(css)}" x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" '
            f'height="{ROW - 6}" rx="2"/>'
            f'<text class="chart-value" x="{LABEL_WIDTH + length + 6:.1f}" y="{y + ROW - 9}">'
            f"{escape(text)}</text></g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def columns(title: str, slices: Sequence[tuple[str, dict[str, int]]], series: Sequence[str],
            *, first_label: str = "", last_label: str = "") -> Markup:
    """Stacked columns, one per slice (label, counts per series), bottom to top in ``series`` order."""
    width, height, left, bottom = 660, 180, 50, 24
    plot_w, plot_h = width - left - 10, height - bottom - 10
    top = max((sum(counts.values()) for _, counts in slices), default=0)
    step = plot_w / max(len(slices), 1)
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
             f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<line class="axis" x1="{left}" y1="{10 + plot_h}" x2="{width - 10}" y2="{10 + plot_h}"/>',
             f'<text class="chart-value" x="{left - 6}" y="18" text-anchor="end">{_number(top)}</text>',
             f'<text class="chart-value" x="{left - 6}" y="{10 + plot_h}" text-anchor="end">0</text>']
    if not top:
        parts.append(f'<text class="chart-label" x="{left + 8}" y="{10 + plot_h / 2:.0f}">'
                     "nothing in this window</text>")
    for i, (label, counts) in enumerate(slices):
        y: float = 10 + plot_h
        for name in series:
            count = counts.get(name, 0)
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            parts.append(f'<rect class="bar-{escape(name)}" x="{left + i * step + 1:.1f}" y="{y:.1f}" '
                         f'width="{max(step - 2, 1):.1f}" height="{h:.1f}">'
                         f"<title>{escape(label)}: {count:,} {escape(name)}</title></rect>")
    parts.append(f'<text class="chart-label" x="{left}" y="{height - 6}">{escape(first_label)}</text>')
    parts.append(f'<text class="chart-label" x="{width - 10}" y="{height - 6}" text-anchor="end">'
                 f"{escape(last_label)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


__all__ = ["columns", "hbars"]
