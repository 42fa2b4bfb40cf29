"""Draw the book's logo and favicon: ``python book/_static/make_logo.py``.

The picture is the subject of the book in one glance: a vector field on a disk
that is *equivariant* under the rotations of C_8 -- eight arrows, each the
previous one turned by 45 degrees about the centre, so that rotating the
picture by 45 degrees maps it onto itself.  It is written as plain SVG (no
plotting library, no timestamps), so re-running the script reproduces the
committed files byte for byte; ``tests/test_book_browser.py`` checks that.
"""
from __future__ import annotations

import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 8            # order of the rotation group drawn
SIZE = 64.0      # viewBox is [0, SIZE] x [0, SIZE]
BLUE, ORANGE, WHITE = "#1f4e79", "#f39c12", "#ffffff"


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _arrow(k: int, radius: float, length: float, head: float) -> str:
    """Arrow ``k``: tangent (counter-clockwise) at angle 2*pi*k/N, as an SVG path."""
    c = SIZE / 2
    phi = 2 * math.pi * k / N + math.pi / 2
    # Foot of the arrow on the circle, direction = tangent (-sin, cos); SVG's y axis points down.
    px, py = c + radius * math.cos(phi), c - radius * math.sin(phi)
    dx, dy = -math.sin(phi), -math.cos(phi)
    x0, y0 = px - dx * length / 2, py - dy * length / 2
    x1, y1 = px + dx * length / 2, py + dy * length / 2
    # Arrow head: two short strokes back from the tip, +-30 degrees.
    hx1 = x1 - head * (dx * math.cos(0.5) - dy * math.sin(0.5))
    hy1 = y1 - head * (dx * math.sin(0.5) + dy * math.cos(0.5))
    hx2 = x1 - head * (dx * math.cos(-0.5) - dy * math.sin(-0.5))
    hy2 = y1 - head * (dx * math.sin(-0.5) + dy * math.cos(-0.5))
    return (f'<path d="M{_fmt(x0)} {_fmt(y0)} L{_fmt(x1)} {_fmt(y1)} '
            f'M{_fmt(hx1)} {_fmt(hy1)} L{_fmt(x1)} {_fmt(y1)} L{_fmt(hx2)} {_fmt(hy2)}"/>')


def logo_svg() -> str:
    c = SIZE / 2
    arrows = "\n    ".join(_arrow(k, radius=20.0, length=9.0, head=4.0) for k in range(N))
    return f"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_fmt(SIZE)} {_fmt(SIZE)}" width="64" height="64">
  <title>minequi</title>
  <circle cx="{_fmt(c)}" cy="{_fmt(c)}" r="31" fill="{BLUE}"/>
  <circle cx="{_fmt(c)}" cy="{_fmt(c)}" r="6" fill="{ORANGE}"/>
  <g fill="none" stroke="{WHITE}" stroke-width="2.8" stroke-linecap="round" stroke-linejoin="round">
    {arrows}
  </g>
</svg>
"""


def main() -> None:
    (HERE / "logo.svg").write_text(logo_svg())


if __name__ == "__main__":
    main()
