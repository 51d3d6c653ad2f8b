#!/usr/bin/env python3
"""Draws Kiln's application icon: a brick beehive kiln with a glowing arched opening and
three sparks, on a rounded plum square.

Writes, next to this script:
  kiln.svg                      the scalable icon (hicolor/scalable/apps)
  hicolor/NxN/apps/kiln.png     N = 32, 48, 64, 128, 256, 512 (Linux icon theme sizes)
  kiln.icns                     the macOS bundle icon (16 … 512 px, plus 1024 for @2x)

Needs only Pillow (`pip install pillow`); the outputs are committed, so building a package
never runs this. The PNGs are drawn at 4x and downscaled, so edges are anti-aliased.
Everything is drawn in a 512-unit square; the SVG uses the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

HERE = Path(__file__).resolve().parent
SIZES = [32, 48, 64, 128, 256, 512]

# ---- geometry (512 units) -------------------------------------------------------------
BG = dict(x=32, y=32, w=448, h=448, r=100, top="#3b2452", bottom="#140c1e")
DOME = dict(left=112, right=400, spring=262, bottom=398)  # semicircle on a box
DOME_TOP, DOME_BOTTOM = "#e58552", "#9a4327"
BRICK = "#6f2b15"
COURSES = [178, 218, 258, 298, 338, 378]  # mortar lines (y)
BASE = dict(x=92, y=392, w=328, h=26, r=9, fill="#4e2418")
CHIMNEY = dict(x=234, y=96, w=44, h=40, fill="#8a3a22", cap="#5e2717")
OPENING = dict(left=192, right=320, spring=336, bottom=394)  # arched door
GLOW = [(0.0, "#fff7c8"), (0.32, "#ffc451"), (0.68, "#ff6a1c"), (1.0, "#a3240b")]
RIM = dict(width=10, fill="#5b2211")
SPARKS = [(370, 116, 34), (420, 178, 20), (318, 70, 15)]  # (cx, cy, radius)
SPARK = "#ffd47c"


def dome_points(left: float, right: float, spring: float, bottom: float, n: int = 96):
    """A box with a semicircular top: bottom-left, up, over the arc, down to bottom-right."""
    cx, r = (left + right) / 2, (right - left) / 2
    pts = [(left, bottom), (left, spring)]
    for i in range(1, n):
        a = math.pi - math.pi * i / n
        pts.append((cx + r * math.cos(a), spring - r * math.sin(a)))
    pts += [(right, spring), (right, bottom)]
    return pts


def spark_points(cx: float, cy: float, s: float):
    k = s * 0.2
    return [(cx, cy - s), (cx + k, cy - k), (cx + s, cy), (cx + k, cy + k),
            (cx, cy + s), (cx - k, cy + k), (cx - s, cy), (cx - k, cy - k)]


def hex_rgb(h: str):
    return tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))


# ---- raster ---------------------------------------------------------------------------
def vertical_gradient(size: int, top: str, bottom: str, y0: float, y1: float) -> Image.Image:
    """RGBA image, `top` at y0 → `bottom` at y1 (pixel coordinates), clamped outside."""
    ramp = Image.new("L", (1, size))
    for y in range(size):
        t = min(1.0, max(0.0, (y - y0) / max(1.0, y1 - y0)))
        ramp.putpixel((0, y), round(255 * t))
    ramp = ramp.resize((size, size))
    return ImageOps.colorize(ramp, top, bottom).convert("RGBA")


def radial_glow(size: int, cx: float, cy: float, radius: float) -> Image.Image:
    """RGBA image of the GLOW stops around (cx, cy), pixel coordinates."""
    g = Image.radial_gradient("L")  # 256x256, 0 at the centre, 255 at radius 128
    scale = radius / 128.0
    g = g.resize((round(256 * scale), round(256 * scale)), Image.BICUBIC)
    canvas = Image.new("L", (size, size), 255)
    canvas.paste(g, (round(cx - 128 * scale), round(cy - 128 * scale)))
    (p0, c0), (p1, c1), (p2, c2), (p3, c3) = GLOW
    lut = []
    for v in range(256):
        t = v / 255
        for (a, ca), (b, cb) in (((p0, c0), (p1, c1)), ((p1, c1), (p2, c2)), ((p2, c2), (p3, c3))):
            if t <= b:
                u = (t - a) / (b - a)
                ra, rb = hex_rgb(ca), hex_rgb(cb)
                lut.append(tuple(round(ra[i] + (rb[i] - ra[i]) * u) for i in range(3)))
                break
    r = canvas.point([c[0] for c in lut])
    gch = canvas.point([c[1] for c in lut])
    b = canvas.point([c[2] for c in lut])
    return Image.merge("RGBA", (r, gch, b, Image.new("L", (size, size), 255)))


def mask(size: int, draw_fn) -> Image.Image:
    m = Image.new("L", (size, size), 0)
    draw_fn(ImageDraw.Draw(m))
    return m


def draw_icon(px: int) -> Image.Image:
    ss = 4  # supersampling
    size = px * ss
    k = size / 512.0

    def P(pts):
        return [(x * k, y * k) for x, y in pts]

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))

    # Background: rounded square, plum gradient.
    bg_mask = mask(size, lambda d: d.rounded_rectangle(
        [BG["x"] * k, BG["y"] * k, (BG["x"] + BG["w"]) * k, (BG["y"] + BG["h"]) * k],
        radius=BG["r"] * k, fill=255))
    img.paste(vertical_gradient(size, BG["top"], BG["bottom"], BG["y"] * k,
                                (BG["y"] + BG["h"]) * k), (0, 0), bg_mask)

    # Warm light spilling onto the background behind the kiln.
    halo = mask(size, lambda d: d.ellipse([150 * k, 250 * k, 362 * k, 440 * k], fill=110))
    halo = halo.filter(ImageFilter.GaussianBlur(40 * k))
    halo = ImageChops.multiply(halo, bg_mask)
    img.paste(Image.new("RGBA", (size, size), hex_rgb("#ff7a2a") + (255,)), (0, 0), halo)

    # Shadow under the base.
    shadow = mask(size, lambda d: d.ellipse([100 * k, 404 * k, 412 * k, 436 * k], fill=140))
    shadow = ImageChops.multiply(shadow.filter(ImageFilter.GaussianBlur(8 * k)), bg_mask)
    img.paste(Image.new("RGBA", (size, size), (0, 0, 0, 255)), (0, 0), shadow)

    # Chimney (behind the dome).
    d = ImageDraw.Draw(img)
    c = CHIMNEY
    d.rectangle([c["x"] * k, c["y"] * k, (c["x"] + c["w"]) * k, (c["y"] + c["h"] + 20) * k],
                fill=c["fill"])
    d.rounded_rectangle([(c["x"] - 6) * k, (c["y"] - 6) * k, (c["x"] + c["w"] + 6) * k,
                         (c["y"] + 8) * k], radius=3 * k, fill=c["cap"])

    # Dome: terracotta gradient with brick courses.
    dome_pts = P(dome_points(**DOME))
    dome_mask = mask(size, lambda dd: dd.polygon(dome_pts, fill=255))
    top_y = (DOME["spring"] - (DOME["right"] - DOME["left"]) / 2) * k
    img.paste(vertical_gradient(size, DOME_TOP, DOME_BOTTOM, top_y, DOME["bottom"] * k),
              (0, 0), dome_mask)
    bricks = Image.new("L", (size, size), 0)
    bd = ImageDraw.Draw(bricks)
    lw = max(1, round(4 * k))
    for i, y in enumerate(COURSES):
        bd.line([(0, y * k), (size, y * k)], fill=150, width=lw)
        nxt = COURSES[i + 1] if i + 1 < len(COURSES) else DOME["bottom"]
        offset = 0 if i % 2 else 28
        for x in range(DOME["left"] + offset, DOME["right"], 56):
            bd.line([(x * k, y * k), (x * k, nxt * k)], fill=150, width=lw)
    bricks = ImageChops.multiply(bricks, dome_mask)
    img.paste(Image.new("RGBA", (size, size), hex_rgb(BRICK) + (255,)), (0, 0), bricks)
    # A soft highlight on the dome's left shoulder.
    hl = mask(size, lambda dd: dd.ellipse([140 * k, 150 * k, 250 * k, 300 * k], fill=70))
    hl = ImageChops.multiply(hl.filter(ImageFilter.GaussianBlur(22 * k)), dome_mask)
    img.paste(Image.new("RGBA", (size, size), (255, 230, 200, 255)), (0, 0), hl)

    # Base plinth.
    d = ImageDraw.Draw(img)
    b = BASE
    d.rounded_rectangle([b["x"] * k, b["y"] * k, (b["x"] + b["w"]) * k, (b["y"] + b["h"]) * k],
                        radius=b["r"] * k, fill=b["fill"])

    # The opening: glow on the brickwork around it, the rim, then the fire itself.
    o = OPENING
    door_pts = P(dome_points(o["left"], o["right"], o["spring"], o["bottom"]))
    door_mask = mask(size, lambda dd: dd.polygon(door_pts, fill=255))
    spill = door_mask.filter(ImageFilter.GaussianBlur(18 * k)).point(lambda v: min(255, v * 1.3))
    spill = ImageChops.multiply(spill, dome_mask)
    img.paste(Image.new("RGBA", (size, size), hex_rgb("#ffab4a") + (255,)), (0, 0),
              spill.point(lambda v: v * 0.55))
    d = ImageDraw.Draw(img)
    d.line(door_pts + [door_pts[0]], fill=RIM["fill"], width=round(RIM["width"] * k),
           joint="curve")
    fire = radial_glow(size, 256 * k, (o["bottom"] - 6) * k, 118 * k)
    img.paste(fire, (0, 0), door_mask)

    # Sparks, each with a faint halo.
    for cx, cy, s in SPARKS:
        glow = mask(size, lambda dd: dd.ellipse([(cx - s) * k, (cy - s) * k, (cx + s) * k,
                                                 (cy + s) * k], fill=90))
        glow = glow.filter(ImageFilter.GaussianBlur(s * 0.5 * k))
        img.paste(Image.new("RGBA", (size, size), hex_rgb("#ffb347") + (255,)), (0, 0), glow)
        ImageDraw.Draw(img).polygon(P(spark_points(cx, cy, s)), fill=SPARK)

    # Nothing outside the rounded square.
    img.putalpha(ImageChops.multiply(img.getchannel("A"), bg_mask))
    return img.resize((px, px), Image.LANCZOS)


# ---- vector ---------------------------------------------------------------------------
def svg() -> str:
    def path(pts):
        return "M" + " L".join(f"{x:.2f},{y:.2f}" for x, y in pts) + " Z"

    def arch(left, right, spring, bottom):
        r = (right - left) / 2
        return (f"M{left},{bottom} L{left},{spring} A{r},{r} 0 0 1 {right},{spring} "
                f"L{right},{bottom} Z")

    c, b, o = CHIMNEY, BASE, OPENING
    top_y = DOME["spring"] - (DOME["right"] - DOME["left"]) / 2
    stops = "".join(f'<stop offset="{p}" stop-color="{col}"/>' for p, col in GLOW)
    mortar = []
    for i, y in enumerate(COURSES):
        mortar.append(f'<line x1="0" y1="{y}" x2="512" y2="{y}"/>')
        nxt = COURSES[i + 1] if i + 1 < len(COURSES) else DOME["bottom"]
        offset = 0 if i % 2 else 28
        for x in range(DOME["left"] + offset, DOME["right"], 56):
            mortar.append(f'<line x1="{x}" y1="{y}" x2="{x}" y2="{nxt}"/>')
    sparks = "".join(
        f'<circle cx="{cx}" cy="{cy}" r="{s * 0.8:.1f}" fill="#ffb347" opacity="0.35" '
        f'filter="url(#soft)"/><path d="{path(spark_points(cx, cy, s))}" fill="{SPARK}"/>'
        for cx, cy, s in SPARKS)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Kiln's icon. Generated by make_icons.py (same geometry as the PNGs); edit that, not this. -->
<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512" viewBox="0 0 512 512">
  <defs>
    <linearGradient id="bg" x1="0" y1="{BG['y']}" x2="0" y2="{BG['y'] + BG['h']}" gradientUnits="userSpaceOnUse">
      <stop offset="0" stop-color="{BG['top']}"/><stop offset="1" stop-color="{BG['bottom']}"/>
    </linearGradient>
    <linearGradient id="dome" x1="0" y1="{top_y}" x2="0" y2="{DOME['bottom']}" gradientUnits="userSpaceOnUse">
      <stop offset="0" stop-color="{DOME_TOP}"/><stop offset="1" stop-color="{DOME_BOTTOM}"/>
    </linearGradient>
    <radialGradient id="fire" cx="256" cy="{o['bottom'] - 6}" r="118" gradientUnits="userSpaceOnUse">{stops}</radialGradient>
    <clipPath id="domeClip"><path d="{arch(**DOME)}"/></clipPath>
    <clipPath id="bgClip"><rect x="{BG['x']}" y="{BG['y']}" width="{BG['w']}" height="{BG['h']}" rx="{BG['r']}"/></clipPath>
    <filter id="soft" x="-50%" y="-50%" width="200%" height="200%"><feGaussianBlur stdDeviation="12"/></filter>
    <filter id="halo" x="-50%" y="-50%" width="200%" height="200%"><feGaussianBlur stdDeviation="40"/></filter>
  </defs>
  <rect x="{BG['x']}" y="{BG['y']}" width="{BG['w']}" height="{BG['h']}" rx="{BG['r']}" fill="url(#bg)"/>
  <g clip-path="url(#bgClip)">
    <ellipse cx="256" cy="345" rx="106" ry="95" fill="#ff7a2a" opacity="0.43" filter="url(#halo)"/>
    <ellipse cx="256" cy="420" rx="156" ry="16" fill="#000" opacity="0.5" filter="url(#soft)"/>
  </g>
  <rect x="{c['x']}" y="{c['y']}" width="{c['w']}" height="{c['h'] + 20}" fill="{c['fill']}"/>
  <rect x="{c['x'] - 6}" y="{c['y'] - 6}" width="{c['w'] + 12}" height="14" rx="3" fill="{c['cap']}"/>
  <path d="{arch(**DOME)}" fill="url(#dome)"/>
  <g clip-path="url(#domeClip)">
    <g stroke="{BRICK}" stroke-width="4" opacity="0.6">{''.join(mortar)}</g>
    <ellipse cx="195" cy="225" rx="55" ry="75" fill="#ffe6c8" opacity="0.25" filter="url(#soft)"/>
    <path d="{arch(o['left'], o['right'], o['spring'], o['bottom'])}" fill="#ffab4a" opacity="0.6" filter="url(#soft)"/>
  </g>
  <rect x="{b['x']}" y="{b['y']}" width="{b['w']}" height="{b['h']}" rx="{b['r']}" fill="{b['fill']}"/>
  <path d="{arch(o['left'], o['right'], o['spring'], o['bottom'])}" fill="url(#fire)" stroke="{RIM['fill']}" stroke-width="{RIM['width']}" stroke-linejoin="round" paint-order="stroke"/>
  <path d="{arch(o['left'], o['right'], o['spring'], o['bottom'])}" fill="url(#fire)"/>
  {sparks}
</svg>
"""


def main() -> None:
    big = draw_icon(1024)
    for n in SIZES:
        out = HERE / "hicolor" / f"{n}x{n}" / "apps" / "kiln.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        # Small sizes are drawn at their own size (crisper than a downscale of the big one).
        img = draw_icon(n) if n <= 64 else big.resize((n, n), Image.LANCZOS)
        img.save(out, optimize=True)
        print(out.relative_to(HERE))
    (HERE / "kiln.svg").write_text(svg())
    print("kiln.svg")
    big.save(HERE / "kiln.icns", sizes=[(16, 16), (32, 32), (64, 64), (128, 128), (256, 256),
                                        (512, 512), (1024, 1024)])
    print("kiln.icns")


if __name__ == "__main__":
    main()
