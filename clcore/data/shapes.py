"""`shapes`: a procedural, CORe50-shaped dataset generated offline (docs/datasets.md#shapes) [OURS].

Two disjoint sets of 10 categories (main: the continual-learning stream; auxiliary: dreams and
pretraining), 5 instances each, filmed in 11 sessions (8 training, 3 test) as short videos of F frames
whose pose drifts smoothly. Every video is rendered from its own generator,
``numpy.random.SeedSequence([seed, set_id, object_id, session_id])``, so any subset regenerates
identically and the order of generation does not matter.

Rendering (numpy only): 64 x 64 float32 canvas; static background (one of five families) with static
distractors (shapes of other main categories, behind the object, partly transparent); the object as an
anti-aliased signed-distance mask with an instance texture, vectorised over the frames of a video;
session gain and colour cast; 2x box downsampling to 32 x 32; Gaussian pixel noise; rounding to uint8.
Only IEEE-exact operations (+, -, *, /, sqrt, min, max, floor) touch pixel arrays, so results do not
depend on vector lengths or on the math library.

Row order of every split: session, object id, frame.
"""

from __future__ import annotations

import math

import numpy as np

GENERATOR_VERSION = 1
FRAME_PRESETS = {"tiny": 2, "default": 6, "large": 24}

MAIN_CATEGORIES = ["disc", "square", "triangle", "plus", "ring", "star5", "hexagon", "crescent", "arrow", "tee"]
AUX_CATEGORIES = ["ellipse", "semicircle", "pentagon", "x-cross", "star4", "l-shape", "bow-tie", "trapezoid",
                  "double-bar", "chevron"]
N_INSTANCES = 5
N_OBJECTS = len(MAIN_CATEGORIES) * N_INSTANCES  # per set; object id = 5 * category + instance
SET_NAMES = ("main", "aux")

TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
TEST_SESSIONS = (3, 7, 10)

RENDER_SIZE = 64
IMAGE_SIZE = 32
_UP = RENDER_SIZE // IMAGE_SIZE  # render pixels per output pixel

# The shared 10-colour palette (RGB in [0, 1]); colour c and (c + 5) mod 10 contrast well.
PALETTE_NAMES = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white"]
PALETTE = np.array([
    [0.86, 0.16, 0.14],
    [0.96, 0.56, 0.10],
    [0.95, 0.88, 0.20],
    [0.20, 0.68, 0.24],
    [0.16, 0.76, 0.80],
    [0.16, 0.30, 0.86],
    [0.56, 0.26, 0.76],
    [0.96, 0.48, 0.70],
    [0.50, 0.31, 0.16],
    [0.93, 0.93, 0.93],
], dtype=np.float64)

TEXTURES = ("solid", "stripes", "checker", "dots", "radial")  # instance k gets texture k
_ASPECTS = (0.8, 0.9, 1.0, 1.12, 1.25)
_SIZES = (0.9, 0.95, 1.0, 1.05, 1.1)

BACKGROUNDS = ("flat", "vgradient", "stripes", "smooth-noise", "checker-floor")

# The session table (mirrors CORe50: 8 training and 3 test sessions). Test sessions reuse background
# families seen in training with gains and colour casts that no training session uses, at clutter 2.
SESSIONS = {
    1: {"background": "flat", "gain": 1.00, "cast": (1.00, 1.00, 1.00), "clutter": 0, "noise": 2.0},
    2: {"background": "vgradient", "gain": 0.85, "cast": (1.10, 1.00, 0.90), "clutter": 1, "noise": 4.0},
    3: {"background": "stripes", "gain": 0.78, "cast": (0.92, 1.06, 1.12), "clutter": 2, "noise": 4.0},
    4: {"background": "stripes", "gain": 1.15, "cast": (0.90, 1.00, 1.10), "clutter": 2, "noise": 3.0},
    5: {"background": "smooth-noise", "gain": 0.70, "cast": (1.05, 1.05, 0.85), "clutter": 3, "noise": 6.0},
    6: {"background": "checker-floor", "gain": 1.25, "cast": (0.95, 1.10, 0.95), "clutter": 1, "noise": 8.0},
    7: {"background": "checker-floor", "gain": 1.30, "cast": (1.12, 0.92, 1.04), "clutter": 2, "noise": 6.0},
    8: {"background": "vgradient", "gain": 0.95, "cast": (0.85, 0.95, 1.15), "clutter": 0, "noise": 5.0},
    9: {"background": "smooth-noise", "gain": 1.10, "cast": (1.15, 0.90, 0.95), "clutter": 3, "noise": 7.0},
    10: {"background": "smooth-noise", "gain": 0.65, "cast": (0.88, 1.12, 1.00), "clutter": 2, "noise": 5.0},
    11: {"background": "checker-floor", "gain": 0.60, "cast": (1.00, 1.15, 0.85), "clutter": 2, "noise": 3.0},
}

# Numeric generator parameters (all lengths in output pixels of the 32 x 32 image unless noted).
PARAMS = {
    "render_size": RENDER_SIZE,
    "image_size": IMAGE_SIZE,
    "n_instances": N_INSTANCES,
    "centre_range": [10.0, 22.0],          # object centre, per axis
    "centre_drift_max": 3.0,               # distance between first and last centre of a video
    "scale_range": [0.45, 0.70],           # object diameter / canvas size (before instance size factor)
    "scale_drift": 0.08,                   # per-frame scale factor in [1 - d, 1 + d]
    "rotation_base_deg": 20.0,             # base rotation uniform in [-b, b]
    "rotation_drift_deg": 15.0,            # drift along the video within [-d, d] of the base
    "distractor_scale": [0.35, 0.60],      # relative to the object's scale
    "distractor_contrast": [0.50, 0.80],   # opacity of a distractor over the background
    "distractor_centre_range": [3.0, 29.0],
    "background_colour_range": [0.25, 0.75],
    "background_stripe_period": [4.0, 8.0],
    "background_noise_grid": 5,
    "background_texture_contrast": [0.35, 1.0],  # how far the second background colour moves from the first
    "gain_jitter": 0.05,                   # per-video gain factor in [1 - j, 1 + j]
    "object_shading": 0.15,                # brightness varies by +-s across the object (light from above)
    "texture_frequency": 1.75,             # texture periods per object-radius unit
    "saliency_sigma": 1.0,                 # Gaussian blur of the masks, output pixels
    "saliency_distractor_peak": 0.35,      # distractor saliency relative to the object's peak
    "aa_width": 1.0,                       # anti-aliasing ramp width, render pixels
    "outline_width": 3.0,                  # dark outline inside the silhouette, render pixels
    "outline_level": 0.08,                 # outline grey level
    "halo_width": 3.0,                     # light halo just outside the silhouette, render pixels
    "halo_level": 0.9,                     # halo grey level
    "texture_contrast": 1.0,               # how far textures move from the primary colour to the secondary
    "background_saturation": 0.5,          # 0: grey backgrounds, 1: full random colours
}


# --------------------------------------------------------------------------------------------------
# Instance appearance (fixed rules, no randomness)

def _primary_colour(category: int, instance: int) -> int:
    """Latin-square rule: the two categories of task t = {2t, 2t+1} share the colour set
    {2t, ..., 2t+4} (mod 10), each using every colour once in a different instance order, so colour never
    separates the classes of a task and every colour is a primary colour in >= 4 categories."""
    return (2 * (category // 2) + (instance + 2 * (category % 2)) % N_INSTANCES) % len(PALETTE)


def instance_appearance(category: int, instance: int) -> dict:
    primary = _primary_colour(category, instance)
    return {
        "primary": primary,
        "secondary": (primary + 5) % len(PALETTE),
        "texture": TEXTURES[instance],
        "aspect": _ASPECTS[(instance + category) % 5],
        "size": _SIZES[(3 * instance + category) % 5],
    }


def _appearance_table() -> list[dict]:
    rows = []
    for set_id, names in enumerate((MAIN_CATEGORIES, AUX_CATEGORIES)):
        for c, name in enumerate(names):
            for k in range(N_INSTANCES):
                rows.append({"set": SET_NAMES[set_id], "object": N_INSTANCES * c + k, "category": name,
                             "instance": k, **instance_appearance(c, k)})
    return rows


# --------------------------------------------------------------------------------------------------
# Signed distance functions in object-local units (shapes fit in a circle of radius ~1; v points up).
# Convex pieces are intersections of half-planes (max); unions of overlapping pieces use min.

def _unit(x, y):
    n = math.hypot(x, y)
    return x / n, y / n


def _halfplane(u, v, nx, ny, c):
    return u * nx + v * ny - c


def _box(u, v, hx, hy, cx=0.0, cy=0.0):
    return np.maximum(np.abs(u - cx) - hx, np.abs(v - cy) - hy)


def _circle(u, v, r, cx=0.0, cy=0.0):
    du, dv = u - cx, v - cy
    return np.sqrt(du * du + dv * dv) - r


def _regular_lines(n: int, radius: float, first_deg: float):
    """Unit normals and offsets of the sides of a regular n-gon with circumradius `radius`."""
    apothem = radius * math.cos(math.pi / n)
    out = []
    for i in range(n):
        a = math.radians(first_deg + 360.0 * i / n)
        out.append((math.cos(a), math.sin(a), apothem))
    return out


_TRI_LINES = _regular_lines(3, 1.0, -90.0)
_STAR5_LINES = [(math.cos(math.radians(90 + 72 * k + 72)), math.sin(math.radians(90 + 72 * k + 72)),
                 math.cos(math.radians(72))) for k in range(5)]
_HEX = (math.cos(math.radians(60)), math.sin(math.radians(60)), 0.95 * math.cos(math.pi / 6))
_PENT = [(math.cos(math.radians(a)), math.sin(math.radians(a)), 0.92 * math.cos(math.pi / 5)) for a in (-18.0, 54.0)]
_ARROW_SIDE = _unit(0.9, 0.65)
_ARROW_C = _ARROW_SIDE[1] * 0.95
_TRAP_SIDE = _unit(1.1, 0.45)
_TRAP_C = _TRAP_SIDE[0] * 0.95 - _TRAP_SIDE[1] * 0.55
_STAR4_N = _unit(0.3, 1.0)
_BOW_N = _unit(-0.8, 1.0)
_CHEV_N = (0.6, 0.8)
_SQ2 = 1.0 / math.sqrt(2.0)


def _convex(u, v, lines):
    d = None
    for nx, ny, c in lines:
        h = _halfplane(u, v, nx, ny, c)
        d = h if d is None else np.maximum(d, h)
    return d


def _sdf_star5(u, v):
    # A filled pentagram is the set of points outside at most one of its five lines: the signed
    # distance is the second-largest line distance.
    first = second = None
    for nx, ny, c in _STAR5_LINES:
        h = _halfplane(u, v, nx, ny, c)
        if first is None:
            first = h
        elif second is None:
            first, second = np.maximum(first, h), np.minimum(first, h)
        else:
            second = np.maximum(second, np.minimum(first, h))
            first = np.maximum(first, h)
    return second


def _sdf_ellipse(u, v, a=0.95, b=0.55):
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    return k0 * (k0 - 1.0) / (k1 + 1e-6)


def _sdf_main(c: int, u, v):
    if c == 0:  # disc
        return _circle(u, v, GEOM["disc_r"])
    if c == 1:  # square
        return _box(u, v, GEOM["square_h"], GEOM["square_h"])
    if c == 2:  # triangle (pointing up, centred on its centroid)
        return _convex(u, v, _TRI_LINES)
    if c == 3:  # plus
        return np.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95))
    if c == 4:  # ring
        return np.abs(_circle(u, v, GEOM["ring_mid"])) - GEOM["ring_half"]
    if c == 5:  # five-point star
        return _sdf_star5(u, v)
    if c == 6:  # hexagon (flat sides left and right)
        au, av = np.abs(u), np.abs(v)
        return np.maximum(au - _HEX[2], au * _HEX[0] + av * _HEX[1] - _HEX[2])
    if c == 7:  # crescent (horns up)
        return np.maximum(_circle(u, v, 0.9, 0.0, -0.1), -_circle(u, v, 0.72, 0.0, 0.4))
    if c == 8:  # arrow (pointing up)
        au = np.abs(u)
        head = np.maximum(0.05 - v, _halfplane(au, v, _ARROW_SIDE[0], _ARROW_SIDE[1], _ARROW_C))
        return np.minimum(head, _box(u, v, 0.22, 0.575, 0.0, -0.375))
    if c == 9:  # tee
        return np.minimum(_box(u, v, 0.9, 0.25, 0.0, 0.65), _box(u, v, 0.25, 0.8, 0.0, -0.15))
    raise ValueError(c)


def _sdf_aux(c: int, u, v):
    if c == 0:  # ellipse
        return _sdf_ellipse(u, v)
    if c == 1:  # semicircle (flat side down)
        return np.maximum(_circle(u, v, 0.95, 0.0, -0.45), -0.45 - v)
    if c == 2:  # pentagon (pointing up)
        au = np.abs(u)
        return np.maximum(np.maximum(-v - _PENT[0][2], _halfplane(au, v, *_PENT[0])), _halfplane(au, v, *_PENT[1]))
    if c == 3:  # X-cross: thinner, longer arms than the plus, rotated 45 degrees
        p, q = (u + v) * _SQ2, (v - u) * _SQ2
        return np.minimum(_box(p, q, 1.0, 0.2), _box(p, q, 0.2, 1.0))
    if c == 4:  # four-point star: two thin rhombi
        au, av = np.abs(u), np.abs(v)
        n0, n1 = _STAR4_N
        return np.minimum(au * n0 + av * n1 - 0.3 * n1, av * n0 + au * n1 - 0.3 * n1)
    if c == 5:  # L-shape
        return np.minimum(_box(u, v, 0.25, 0.9, -0.35, 0.0), _box(u, v, 0.7, 0.25, 0.1, -0.65))
    if c == 6:  # bow-tie (two triangles meeting at the centre)
        au = np.abs(u)
        return np.maximum(au - 0.9, _halfplane(au, np.abs(v), _BOW_N[0], _BOW_N[1], 0.0))
    if c == 7:  # trapezoid (narrow side up)
        return np.maximum(np.abs(v) - 0.55, _halfplane(np.abs(u), v, _TRAP_SIDE[0], _TRAP_SIDE[1], _TRAP_C))
    if c == 8:  # double bar
        return np.maximum(np.abs(np.abs(u) - 0.45) - 0.2, np.abs(v) - 0.9)
    if c == 9:  # chevron (pointing up)
        au = np.abs(u)
        t = au * _CHEV_N[0] + v * _CHEV_N[1]
        return np.maximum(np.maximum(t - 0.6, 0.15 - t), np.maximum(-0.85 - v, au - 0.95))
    raise ValueError(c)


GEOM = {"disc_r": 0.85, "square_h": 0.68, "ring_mid": 0.68, "ring_half": 0.22}
_SHAPE_RADIUS = 1.25  # every shape lies within this radius (local units)


# --------------------------------------------------------------------------------------------------
# Textures: t in [0, 1] mixes the primary (0) and secondary (1) colour, in object-local coordinates.

def _soft_square(z):
    w = z - np.floor(z)
    tri = np.abs(2.0 * w - 1.0)
    return np.clip((tri - 0.5) * 4.0 + 0.5, 0.0, 1.0)


def _texture(kind: int, u, v, freq: float):
    if kind == 0:  # solid
        return None
    if kind == 1:  # stripes
        return _soft_square(v * freq)
    if kind == 2:  # checker
        a, b = _soft_square(u * freq), _soft_square(v * freq)
        return a + b - 2.0 * a * b
    if kind == 3:  # dots
        fu = u * freq
        fv = v * freq
        fu = fu - np.floor(fu) - 0.5
        fv = fv - np.floor(fv) - 0.5
        r = np.sqrt(fu * fu + fv * fv)
        return np.clip((0.3 - r) * 8.0 + 0.5, 0.0, 1.0)
    if kind == 4:  # radial gradient
        return np.minimum(np.sqrt(u * u + v * v) * (1.0 / 0.9), 1.0)
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------------
# Layers

_PIX = (np.arange(RENDER_SIZE, dtype=np.float32) + 0.5)  # render pixel centres, in render pixels


def _shape_layer(set_id, category, cx, cy, scale_px, theta, aspect, texture, primary, secondary, freq,
                 shading):
    """Soft mask and colour of a shape over the frames given by the per-frame pose arrays.

    cx, cy: centre (render px, y down); scale_px: render px per local unit; theta: rotation (rad,
    counter-clockwise); arrays of length F. Returns (y0, y1, x0, x1, alpha [F,h,w], colour [F,3,h,w])
    restricted to the bounding box of all frames.
    """
    ax = math.sqrt(aspect)
    ay = 1.0 / ax
    reach = scale_px * (_SHAPE_RADIUS * max(ax, ay)) + 1.5
    x0 = int(max(0, math.floor(float(np.min(cx - reach)))))
    x1 = int(min(RENDER_SIZE, math.ceil(float(np.max(cx + reach)))))
    y0 = int(max(0, math.floor(float(np.min(cy - reach)))))
    y1 = int(min(RENDER_SIZE, math.ceil(float(np.max(cy + reach)))))
    if x1 <= x0 or y1 <= y0:
        return None
    f = len(cx)
    # scalar libm calls per frame (not numpy's SIMD loops) for platform-stable per-frame constants
    cos = np.array([math.cos(t) for t in np.asarray(theta, np.float64)], np.float32).reshape(f, 1, 1)
    sin = np.array([math.sin(t) for t in np.asarray(theta, np.float64)], np.float32).reshape(f, 1, 1)
    inv = (1.0 / scale_px).astype(np.float32).reshape(f, 1, 1)
    dx = _PIX[None, None, x0:x1] - cx.astype(np.float32).reshape(f, 1, 1)  # [F,1,w]
    dy = cy.astype(np.float32).reshape(f, 1, 1) - _PIX[None, y0:y1, None]  # [F,h,1], up positive
    u = (dx * cos + dy * sin) * (inv * np.float32(1.0 / ax))
    v = (dy * cos - dx * sin) * (inv * np.float32(1.0 / ay))
    d = (_sdf_main if set_id == 0 else _sdf_aux)(category, u, v)
    # signed distance in render pixels (aspect keeps the area, so the geometric mean scale is exact
    # for distances up to the aspect's anisotropy)
    d = d * scale_px.astype(np.float32).reshape(f, 1, 1)
    alpha = np.clip(0.5 - d * np.float32(1.0 / PARAMS["aa_width"]), 0.0, 1.0)
    p = PALETTE[primary].astype(np.float32).reshape(1, 3, 1, 1)
    t = _texture(texture, u, v, freq)
    if t is None:
        colour = np.broadcast_to(p, (f, 3) + u.shape[1:])
    else:
        s = PALETTE[secondary].astype(np.float32).reshape(1, 3, 1, 1)
        colour = p + (s - p) * (t * np.float32(PARAMS["texture_contrast"]))[:, None]
    if shading:
        colour = colour * (1.0 + np.float32(shading) * np.clip(v, -1.0, 1.0))[:, None]
    if PARAMS["outline_width"] > 0:
        inner = np.clip(0.5 - (d + np.float32(PARAMS["outline_width"])) * np.float32(1.0 / PARAMS["aa_width"]), 0.0, 1.0)
        rim = np.float32(PARAMS["outline_level"])
        colour = rim + (colour - rim) * inner[:, None]
    draw = alpha
    if PARAMS.get("halo_width", 0) > 0:
        draw = np.clip(0.5 - (d - np.float32(PARAMS["halo_width"])) * np.float32(1.0 / PARAMS["aa_width"]), 0.0, 1.0)
        halo = np.float32(PARAMS.get("halo_level", 0.9))
        colour = halo + (colour - halo) * alpha[:, None]
    return y0, y1, x0, x1, alpha, colour, draw


def _composite(canvas, layer, opacity=1.0):
    """canvas [F or 1, 3, H, W] (in place) <- layer over canvas; returns the full-size alpha [F,H,W]."""
    y0, y1, x0, x1, alpha, colour, draw = layer
    a = draw[:, None] if opacity == 1.0 else draw[:, None] * np.float32(opacity)
    region = canvas[:, :, y0:y1, x0:x1]
    region += (colour - region) * a
    full = np.zeros((alpha.shape[0], RENDER_SIZE, RENDER_SIZE), np.float32)
    full[:, y0:y1, x0:x1] = alpha
    return full


def _background(family: str, rng: np.random.Generator) -> np.ndarray:
    """Static background [3, 64, 64] of a session's family. Draws the same number of values for every
    family, so the rest of a video's random stream does not depend on the family."""
    lo, hi = PARAMS["background_colour_range"]
    c0 = rng.uniform(lo, hi, 3)
    c1 = rng.uniform(lo, hi, 3)
    mix = rng.uniform(*PARAMS["background_texture_contrast"])
    c1 = c0 + (c1 - c0) * mix  # the second colour, at a random contrast to the first
    sat = PARAMS["background_saturation"]
    c0 = c0.mean() + (c0 - c0.mean()) * sat
    c1 = c1.mean() + (c1 - c1.mean()) * sat
    angle = rng.uniform(0.0, math.pi)
    period = rng.uniform(*PARAMS["background_stripe_period"]) * _UP
    phase = rng.uniform(0.0, 1.0)
    g = PARAMS["background_noise_grid"]
    grid = rng.uniform(0.0, 1.0, (g, g, 3))
    horizon = rng.uniform(0.25, 0.45) * RENDER_SIZE
    tile = rng.uniform(0.6, 1.2)

    c0 = c0.astype(np.float32)[:, None, None]
    c1 = c1.astype(np.float32)[:, None, None]
    ys, xs = _PIX[:, None], _PIX[None, :]
    if family == "flat":
        bg = np.broadcast_to(c0, (3, RENDER_SIZE, RENDER_SIZE))
    elif family == "vgradient":
        t = (ys * np.float32(1.0 / RENDER_SIZE))[None]
        bg = c0 + (c1 - c0) * t
    elif family == "stripes":
        z = (xs * np.float32(math.cos(angle)) + ys * np.float32(math.sin(angle))) * np.float32(1.0 / period) + np.float32(phase)
        bg = c0 + (c1 - c0) * _soft_square(z)[None]
    elif family == "smooth-noise":
        # bilinear interpolation of a g x g grid of mixing weights between the two colours
        pos = _PIX * np.float32((g - 1) / RENDER_SIZE)
        i0 = np.minimum(np.floor(pos).astype(np.int64), g - 2)
        w = (pos - i0.astype(np.float32))
        gr = grid.astype(np.float32)
        rows = gr[i0] + (gr[i0 + 1] - gr[i0]) * w[:, None, None]          # [64, g, 3]
        full = rows[:, i0] + (rows[:, i0 + 1] - rows[:, i0]) * w[None, :, None]  # [64, 64, 3]
        bg = c0 + (c1 - c0) * full.transpose(2, 0, 1)
    elif family == "checker-floor":
        # a wall above the horizon, a checkered floor in perspective below it
        depth = np.maximum(ys - np.float32(horizon), np.float32(1.0))  # [64,1]
        fz = np.float32(tile * RENDER_SIZE * 0.5) / depth
        fx = (xs - np.float32(RENDER_SIZE / 2)) / depth * np.float32(tile * 2.0)
        a, b = _soft_square(fz * np.float32(0.25)), _soft_square(fx)
        chk = a + b - 2.0 * a * b
        floor = c1 * (0.55 + 0.45 * chk)[None]
        wall = c0 * (0.8 + 0.2 * (ys / np.float32(horizon)))[None]
        bg = np.where((ys < np.float32(horizon))[None], wall, floor)
    else:
        raise ValueError(family)
    return np.ascontiguousarray(np.broadcast_to(bg, (3, RENDER_SIZE, RENDER_SIZE)), dtype=np.float32)


def _smooth_path(start, end, frames: int):
    """Per-frame values moving smoothly (smoothstep) from start to end."""
    if frames == 1:
        return np.asarray(start, np.float64)[None]
    t = np.linspace(0.0, 1.0, frames)
    s = t * t * (3.0 - 2.0 * t)
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    return start + (end - start) * (s.reshape((frames,) + (1,) * start.ndim))


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = int(math.ceil(3 * sigma))
    k = np.array([math.exp(-0.5 * (i / sigma) ** 2) for i in range(-r, r + 1)])
    return (k / math.fsum(k)).astype(np.float32)


_KERNEL = _gauss_kernel(PARAMS["saliency_sigma"])


def _blur(m: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of [..., H, W] with zero padding (explicit shifted adds)."""
    r = len(_KERNEL) // 2
    h, w = m.shape[-2:]
    p = np.zeros(m.shape[:-2] + (h + 2 * r, w), np.float32)
    p[..., r:r + h, :] = m
    out = p[..., 0:h, :] * _KERNEL[0]
    for i in range(1, len(_KERNEL)):
        out = out + p[..., i:i + h, :] * _KERNEL[i]
    p = np.zeros(m.shape[:-2] + (h, w + 2 * r), np.float32)
    p[..., :, r:r + w] = out
    out = p[..., :, 0:w] * _KERNEL[0]
    for i in range(1, len(_KERNEL)):
        out = out + p[..., :, i:i + w] * _KERNEL[i]
    return out


def _down(a: np.ndarray) -> np.ndarray:
    """2x box downsampling of the last two axes."""
    return ((a[..., 0::2, 0::2] + a[..., 1::2, 0::2]) + (a[..., 0::2, 1::2] + a[..., 1::2, 1::2])) * np.float32(0.25)


def _peak_normalise(m: np.ndarray, peak: float) -> np.ndarray:
    top = m.max(axis=(-2, -1), keepdims=True)
    return m * (np.float32(peak) / np.maximum(top, np.float32(1e-6)))


def _check_ids(set_id: int, object_id: int, session_id: int, frames: int) -> None:
    if set_id not in (0, 1):
        raise ValueError(f"set_id must be 0 (main) or 1 (aux), got {set_id}")
    if not 0 <= object_id < N_OBJECTS:
        raise ValueError(f"object_id must be in 0..{N_OBJECTS - 1}, got {object_id}")
    if session_id not in SESSIONS:
        raise ValueError(f"session_id must be in 1..11, got {session_id}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")


def render_video(set_id: int, object_id: int, session_id: int, seed: int = 0, frames: int = 6
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 [F,3,32,32], sal uint8 [F,1,32,32]) of one (object, session) video; set_id 0 = main,
    1 = aux. Depends only on its arguments (generate_shapes produces exactly these rows)."""
    x, sal, _ = _render(set_id, object_id, session_id, seed, frames)
    return x, sal


def _render(set_id: int, object_id: int, session_id: int, seed: int, frames: int):
    """render_video plus the object's soft mask at 32 x 32 (float32 [F,32,32], for tests)."""
    if isinstance(frames, str):
        frames = FRAME_PRESETS[frames]
    _check_ids(set_id, object_id, session_id, frames)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(set_id), int(object_id), int(session_id)]))
    session = SESSIONS[session_id]
    category, instance = divmod(object_id, N_INSTANCES)
    look = instance_appearance(category, instance)
    f = frames
    P = PARAMS

    # 1. static scene: background, then distractors behind the object
    scene = _background(session["background"], rng)[None].copy()  # [1,3,64,64]
    gain = session["gain"] * rng.uniform(1.0 - P["gain_jitter"], 1.0 + P["gain_jitter"])

    # 2. object pose along the video (output pixels -> render pixels)
    lo, hi = P["centre_range"]
    c_start = rng.uniform(lo, hi, 2)
    step_angle = rng.uniform(0.0, 2 * math.pi)
    step_len = P["centre_drift_max"] * math.sqrt(rng.uniform(0.0, 1.0))
    c_end = np.clip(c_start + step_len * np.array([math.cos(step_angle), math.sin(step_angle)]), lo, hi)
    centre = _smooth_path(c_start, c_end, f) * _UP  # [F,2]
    base_scale = rng.uniform(*P["scale_range"])
    sd = P["scale_drift"]
    scale_f = _smooth_path(rng.uniform(1 - sd, 1 + sd), rng.uniform(1 - sd, 1 + sd), f)
    # render px per local unit: the object's diameter (2 local units) spans `scale` of the canvas
    scale_px = base_scale * look["size"] * scale_f * (RENDER_SIZE / 2.0)
    rb, rd = math.radians(P["rotation_base_deg"]), math.radians(P["rotation_drift_deg"])
    base_rot = rng.uniform(-rb, rb)
    d0, d1 = rng.uniform(-rd, rd), rng.uniform(-rd, rd)
    if PARAMS.get("rotation_drift_from_base", False):
        d0 = 0.0
    theta = base_rot + _smooth_path(d0, d1, f)

    # 3. distractors: other main categories, smaller, partly transparent, static
    n_dis = session["clutter"]
    others = [c for c in range(len(MAIN_CATEGORIES)) if not (set_id == 0 and c == category)]
    dis_alpha = []
    for _ in range(n_dis):
        dc = others[int(rng.integers(len(others)))]
        dpos = rng.uniform(*P["distractor_centre_range"], 2) * _UP
        dscale = base_scale * rng.uniform(*P["distractor_scale"]) * (RENDER_SIZE / 2.0)
        drot = rng.uniform(-math.pi, math.pi)
        dasp = _ASPECTS[int(rng.integers(5))]
        dtex = int(rng.integers(len(TEXTURES)))
        dcol = int(rng.integers(len(PALETTE)))
        dcol2 = (dcol + 1 + int(rng.integers(len(PALETTE) - 1))) % len(PALETTE)
        dcontrast = rng.uniform(*P["distractor_contrast"])
        layer = _shape_layer(0, dc, np.array([dpos[0]]), np.array([dpos[1]]), np.array([dscale]),
                             np.array([drot]), dasp, dtex, dcol, dcol2, P["texture_frequency"], P["object_shading"])
        if layer is not None:
            dis_alpha.append(_composite(scene, layer, dcontrast))

    # 4. the object over the scene, per frame
    canvas = np.repeat(scene, f, axis=0)  # [F,3,64,64]
    layer = _shape_layer(set_id, category, centre[:, 0], centre[:, 1], scale_px, theta, look["aspect"],
                         TEXTURES.index(look["texture"]), look["primary"], look["secondary"],
                         P["texture_frequency"], P["object_shading"])
    obj_alpha = _composite(canvas, layer)

    # 5. camera: session gain and colour cast, downsampling, pixel noise, quantisation
    light = (np.asarray(session["cast"], np.float64) * gain * 255.0).astype(np.float32).reshape(1, 3, 1, 1)
    img = _down(canvas) * light
    noise = rng.standard_normal((f, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    img = img + noise * np.float32(session["noise"])
    x = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    # 6. saliency: blurred object mask at peak 255, distractors at 0.35 of it, combined by maximum
    sal = _peak_normalise(_blur(_down(obj_alpha)), 255.0)
    for a in dis_alpha:
        sal = np.maximum(sal, _peak_normalise(_blur(_down(a)), 255.0 * P["saliency_distractor_peak"]))
    sal = np.clip(np.rint(sal), 0, 255).astype(np.uint8)[:, None]
    return np.ascontiguousarray(x), np.ascontiguousarray(sal), _down(obj_alpha)


# --------------------------------------------------------------------------------------------------
# Whole dataset

def _generate_set(set_id: int, sessions, seed: int, frames: int) -> dict[str, np.ndarray]:
    n_vid = len(sessions) * N_OBJECTS
    n = n_vid * frames
    x = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    sal = np.empty((n, 1, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    session_col = np.repeat(np.asarray(sessions, np.int16), N_OBJECTS * frames)
    object_col = np.tile(np.repeat(np.arange(N_OBJECTS, dtype=np.int16), frames), len(sessions))
    frame_col = np.tile(np.arange(frames, dtype=np.int16), n_vid)
    row = 0
    for s in sessions:
        for o in range(N_OBJECTS):
            xv, sv = render_video(set_id, o, s, seed, frames)
            x[row:row + frames], sal[row:row + frames] = xv, sv
            row += frames
    return {"x": x, "y": (object_col // N_INSTANCES).astype(np.int16), "sal": sal, "object": object_col,
            "instance": (object_col % N_INSTANCES).astype(np.int16), "session": session_col, "frame": frame_col}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def generator_meta(seed: int = 0, frames: int = 6) -> dict:
    """The `generator` entry of meta.json: everything that fixes the generated arrays."""
    return _jsonable({
        "name": "clcore.data.shapes",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "frames": int(frames),
        "frame_presets": FRAME_PRESETS,
        "seeding": "numpy.random.SeedSequence([seed, set_id, object_id, session_id]) per video; "
                   "set_id 0 = main, 1 = aux",
        "row_order": ["session", "object", "frame"],
        "params": PARAMS,
        "sessions": {str(k): v for k, v in SESSIONS.items()},
        "train_sessions": TRAIN_SESSIONS,
        "test_sessions": TEST_SESSIONS,
        "main_categories": MAIN_CATEGORIES,
        "aux_categories": AUX_CATEGORIES,
        "palette": {"names": PALETTE_NAMES, "rgb": PALETTE},
        "textures": TEXTURES,
        "backgrounds": BACKGROUNDS,
        "instances": _appearance_table(),
        "signature": "4x4 px at the top-left corner, 2x2-px cells checker: palette colours c (top-left, "
                     "bottom-right) and (c + 3) mod 10",
    })


def generate_shapes(seed: int = 0, frames: int = 6) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """All splits (train, test, test_reduced, aux_train, aux_test) and the generator metadata."""
    if isinstance(frames, str):
        frames = FRAME_PRESETS[frames]
    frames = int(frames)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    train = _generate_set(0, TRAIN_SESSIONS, seed, frames)
    test = _generate_set(0, TEST_SESSIONS, seed, frames)
    splits = {
        "train": train,
        "test": test,
        "test_reduced": {k: np.ascontiguousarray(v[::3]) for k, v in test.items()},
        "aux_train": _generate_set(1, TRAIN_SESSIONS, seed, frames),
        "aux_test": _generate_set(1, TEST_SESSIONS, seed, frames),
    }
    return splits, generator_meta(seed, frames)


# --------------------------------------------------------------------------------------------------
# Spurious class signature (seq-shapes-spurious)

SIGNATURE_SIZE = 4


def signature_patch(class_ids: np.ndarray, size: int = SIGNATURE_SIZE) -> np.ndarray:
    """uint8 [N,3,size,size]: the class signature, a 2x2 checker of palette colours a (top-left and
    bottom-right cells) and b. a = c mod 10, b = (c // 10 + c mod 10 + 3) mod 10: for c < 10 the colours
    c and c + 3 of seq-shapes-spurious, and distinct pairs for 100 classes
    (docs/datasets.md#spurious-class-signatures)."""
    c = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    rgb = np.rint(PALETTE * 255.0).astype(np.uint8)  # [10,3]
    n = len(PALETTE)
    a, b = rgb[c % n], rgb[(c // n + c % n + 3) % n]  # [N,3]
    half = np.arange(size) >= size // 2
    cell = half[:, None] ^ half[None, :]  # True -> second colour
    return np.ascontiguousarray(np.where(cell[None, None], b[:, :, None, None], a[:, :, None, None]))


def paste_signature(x: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """A copy of x (uint8 [N,3,H,W]) with the signature of class_ids[i] at the top-left 4x4 of row i."""
    x = np.array(x, dtype=np.uint8, copy=True)
    class_ids = np.asarray(class_ids).reshape(-1)
    if x.ndim != 4 or x.shape[1] != 3 or len(class_ids) != x.shape[0]:
        raise ValueError(f"expected x [N,3,H,W] and N class ids, got {x.shape} and {len(class_ids)}")
    x[:, :, :SIGNATURE_SIZE, :SIGNATURE_SIZE] = signature_patch(class_ids)
    return x


# --------------------------------------------------------------------------------------------------
# NIC scenario (shapes-nic-{40,79,196,391})

NIC_GROUP = {40: 10, 79: 5, 196: 2, 391: 1}


def nic_batches(train_object: np.ndarray, train_session: np.ndarray, n_batches: int, run: int,
                intro_spread: float | None = None, session_order: str = "free",
                shuffle_frames: bool = False) -> list[np.ndarray]:
    """Row indices (int32) into `train` for each batch of shapes-nic-{n_batches}, run `run`.

    Batch 0: instance 0 of every category from session 1 (10 videos). The other videos, in canonical
    (session, object) order, are permuted with numpy.random.default_rng(run) and grouped 10, 5, 2 or 1 per
    batch, giving 40, 79, 196 or 391 batches for the 400 training videos. Within a batch, videos follow the
    permutation and each video's rows keep their split order.

    AR1*'s options (docs/datasets.md#nic-streams): `intro_spread` f places the first video of each of the 40
    objects absent from batch 0 at distinct uniform positions before ⌊f·390⌋ and fills the other positions with
    videos of objects already introduced; `session_order: chronological` re-sorts each object's videos by session
    over the positions it holds (CORe50 NICv2-79's property); `shuffle_frames` shuffles the rows of every batch.
    All draws come from the same generator.
    """
    if n_batches not in NIC_GROUP:
        raise ValueError(f"shapes-nic supports {sorted(NIC_GROUP)} batches, got {n_batches}")
    if session_order not in ("free", "chronological"):
        raise ValueError(f"session_order must be 'free' or 'chronological', not {session_order!r}")
    group = NIC_GROUP[n_batches]
    obj = np.asarray(train_object).astype(np.int64).reshape(-1)
    ses = np.asarray(train_session).astype(np.int64).reshape(-1)
    if obj.shape != ses.shape:
        raise ValueError("train_object and train_session must have the same length")
    key = ses * (N_OBJECTS + 1) + obj
    order = np.argsort(key, kind="stable")
    uniq, first = np.unique(key[order], return_index=True)
    rows = np.split(order, first[1:])  # rows of each video, ascending (stable sort)
    video_ses, video_obj = uniq // (N_OBJECTS + 1), uniq % (N_OBJECTS + 1)
    first_session = min(TRAIN_SESSIONS)
    is_first = (video_ses == first_session) & (video_obj % N_INSTANCES == 0)
    batch0 = [rows[i] for i in np.flatnonzero(is_first)]
    rest_videos = np.flatnonzero(~is_first)
    if len(batch0) != len(MAIN_CATEGORIES) or len(rest_videos) != group * (n_batches - 1):
        raise ValueError(f"shapes-nic-{n_batches} needs 10 first-batch videos and {group * (n_batches - 1)} others, "
                         f"got {len(batch0)} and {len(rest_videos)}")
    rng = np.random.default_rng(run)
    if intro_spread is None:
        sequence = rest_videos[rng.permutation(len(rest_videos))]
    else:
        sequence = _spread_introductions(rest_videos, video_obj, set(video_obj[is_first].tolist()), intro_spread, rng)
    if session_order == "chronological":
        sequence = _chronological(sequence, video_obj, video_ses)
    out = [np.concatenate(batch0).astype(np.int32)]
    for b in range(0, len(sequence), group):
        out.append(np.concatenate([rows[v] for v in sequence[b:b + group]]).astype(np.int32))
    if shuffle_frames:
        out = [batch[rng.permutation(len(batch))] for batch in out]
    return out


def _spread_introductions(videos: np.ndarray, video_obj: np.ndarray, known: set, spread: float, rng,
                          tries: int = 100) -> np.ndarray:
    """An order of `videos` in which each object not in `known` first appears at one of distinct uniform positions
    below ⌊spread·len⌋ (assigned at random), every other position holding a uniformly drawn remaining video of an
    object introduced before it; redrawn from scratch when a position has no candidate."""
    n = len(videos)
    new_objects = sorted(set(video_obj[videos].tolist()) - known)
    limit = int(spread * n)
    if not 0 < len(new_objects) <= limit:
        raise ValueError(f"intro_spread {spread} leaves {limit} positions for {len(new_objects)} new objects")
    for _ in range(tries):
        positions = rng.choice(limit, size=len(new_objects), replace=False)
        introduced_at = dict(zip(rng.permutation(new_objects).tolist(), positions.tolist()))
        sequence = np.full(n, -1)
        pool = list(videos.tolist())
        for o, position in introduced_at.items():
            own = [v for v in pool if video_obj[v] == o]
            sequence[position] = own[rng.integers(len(own))]
            pool.remove(sequence[position])
        for position in range(n):
            if sequence[position] >= 0:
                continue
            candidates = [v for v in pool if video_obj[v] in known or introduced_at.get(video_obj[v], n) < position]
            if not candidates:
                break
            sequence[position] = candidates[rng.integers(len(candidates))]
            pool.remove(sequence[position])
        else:
            return sequence
    raise ValueError(f"no stream with intro_spread {spread} found in {tries} draws")


def _chronological(sequence: np.ndarray, video_obj: np.ndarray, video_ses: np.ndarray) -> np.ndarray:
    """Each object's videos re-sorted by session over the positions the object holds."""
    out = sequence.copy()
    for o in np.unique(video_obj[sequence]):
        held = np.flatnonzero(video_obj[sequence] == o)
        out[held] = sorted(sequence[held].tolist(), key=lambda v: video_ses[v])
    return out
