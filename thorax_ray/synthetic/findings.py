"""Signatures of the 14 ChestX-ray14 findings, added to the anatomy's attenuation map.

Each finding has a draw function (name -> FindingSpec registry) that returns a `Mark`: an attenuation
delta on a pixel window (its box is where |delta| exceeds 10 % of its peak), and optionally a modifier
that changes the anatomy before it is drawn (cardiomegaly, emphysema). Densities are scaled by
`ctx.strength` (2 at difficulty 0, 1 at difficulty 1, 0.5 at difficulty 2). Sides: `s = -1` is the
image-left lung (the patient's right), `s = +1` the image-right lung.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from thorax_ray.synthetic.anatomy import Anatomy, AnatomyParams, diaphragm_v, lung_geometry
from thorax_ray.synthetic.raster import F32, Canvas, bump, dome, smoothstep, upsample

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Ctx:
    canvas: Canvas
    params: AnatomyParams
    anatomy: Anatomy
    strength: float

    def window(self, u0: float, v0: float, u1: float, v1: float):
        """(rows, cols, U, V, lung) of the anatomical rectangle."""
        rows, cols = self.canvas.window(u0, v0, u1, v1)
        cv = self.canvas
        return rows, cols, cv.u[rows, cols], cv.v[rows, cols], self.anatomy.lung[rows, cols]


@dataclass(frozen=True)
class Mark:
    rows: slice
    cols: slice
    delta: np.ndarray | None
    box: Box | None = None


@dataclass(frozen=True)
class FindingSpec:
    draw: Callable[[Ctx, np.random.Generator], Mark]
    modify: Callable[[AnatomyParams, np.random.Generator, float], AnatomyParams] | None = None


def box_of(mark: Mark, size: int) -> Box:
    """Tight (x, y, w, h) around where |delta| > 10 % of its peak; the window itself if nothing was drawn."""
    d = np.abs(mark.delta) if mark.delta is not None else np.zeros((0, 0), F32)
    if d.size == 0 or not np.any(d > 0):
        x0, y0 = min(mark.cols.start, size - 1), min(mark.rows.start, size - 1)
        return x0, y0, max(1, min(mark.cols.stop, size) - x0), max(1, min(mark.rows.stop, size) - y0)
    hit = d > F32(0.1) * d.max()
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    return (int(mark.cols.start + cols[0]), int(mark.rows.start + rows[0]),
            int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, hi))


def place(ctx: Ctx, rng: np.random.Generator, p_left: float, v_range, lat_range, margin: float):
    """A random point inside a lung (at least `margin` from its outline when possible): (u, v, side)."""
    s = -1.0 if rng.random() < p_left else 1.0
    lat, v = rng.uniform(*lat_range, 64), rng.uniform(*v_range, 64)
    u = 0.5 + s * lat
    depth = lung_geometry(ctx.params, u.astype(F32), v.astype(F32))[0]
    ok = depth > margin
    i = int(np.argmax(ok)) if ok.any() else int(np.argmax(depth))
    return float(u[i]), float(v[i]), s


def side_mask(U: np.ndarray, s: float) -> np.ndarray:
    return (F32(s) * (U - F32(0.5)) > 0).astype(F32)


def round_opacity(ctx: Ctx, rng, u, v, rx, ry, density, lobulation=0.0) -> Mark:
    rows, cols, U, V, lung = ctx.window(u - 1.3 * rx, v - 1.3 * ry, u + 1.3 * rx, v + 1.3 * ry)
    du, dv = (U - F32(u)) / F32(rx), (V - F32(v)) / F32(ry)
    q2 = du * du + dv * dv
    if lobulation:
        th = np.arctan2(dv, du)
        k, phase = rng.integers(3, 6, 2), rng.uniform(0, 2 * math.pi, 2)
        lobes = 1 + F32(lobulation) * (np.sin(k[0] * th + F32(phase[0])) + F32(0.6) * np.sin(k[1] * th + F32(phase[1])))
        q2 = q2 / (lobes * lobes)
    prof = dome(q2) ** F32(0.6)
    return Mark(rows, cols, F32(density * ctx.strength) * prof * (F32(0.35) + F32(0.65) * lung))


def nodule(ctx: Ctx, rng: np.random.Generator) -> Mark:
    r = lognormal(rng, 0.034, 0.3, 0.016, 0.07)
    u, v, _ = place(ctx, rng, 0.4, (0.35, 0.68), (0.08, 0.36), 0.6 * r)
    return round_opacity(ctx, rng, u, v, r, r * rng.uniform(0.9, 1.1), 0.13 * rng.uniform(0.85, 1.15))


def mass(ctx: Ctx, rng: np.random.Generator) -> Mark:
    rx = lognormal(rng, 0.057, 0.25, 0.035, 0.12)
    u, v, _ = place(ctx, rng, 0.55, (0.33, 0.66), (0.05, 0.28), 0.4 * rx)
    return round_opacity(ctx, rng, u, v, rx, rx * lognormal(rng, 1.15, 0.1, 0.9, 1.4), 0.22, lobulation=0.07)


def atelectasis(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Plate-like (discoid) bands in a lower zone, or a basal wedge of lower-lobe collapse."""
    return plate_atelectasis(ctx, rng) if rng.random() < 0.55 else wedge_atelectasis(ctx, rng)


def plate_atelectasis(ctx: Ctx, rng: np.random.Generator) -> Mark:
    length, thick = lognormal(rng, 0.18, 0.2, 0.1, 0.28), lognormal(rng, 0.026, 0.25, 0.014, 0.045)
    angle, plates = rng.uniform(-0.5, 0.5), 1 + int(rng.random() < 0.6)
    u, v, _ = place(ctx, rng, 0.55, (0.45, 0.6), (0.1, 0.3), 0.04)
    half_h = 0.5 * length * abs(math.sin(angle)) + 0.07
    rows, cols, U, V, lung = ctx.window(u - length / 2 - 0.02, v - half_h, u + length / 2 + 0.02, v + half_h)
    c, s = F32(math.cos(angle)), F32(math.sin(angle))
    a, b = (U - F32(u)) * c + (V - F32(v)) * s, (V - F32(v)) * c - (U - F32(u)) * s
    band = bump(b / F32(thick / 2)) * smoothstep(length / 2, length / 2 - 0.03, np.abs(a))
    if plates == 2:
        second = bump((b - F32(0.045)) / F32(thick / 2)) * smoothstep(0.4 * length, 0.25 * length, np.abs(a))
        band = np.maximum(band, F32(0.8) * second)
    return Mark(rows, cols, F32(0.17 * ctx.strength) * band * lung)


def wedge_atelectasis(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Triangle on the diaphragm against the heart/mediastinum, apex towards the hilum."""
    p = ctx.params
    s = -1.0 if rng.random() < 0.55 else 1.0
    width, height = lognormal(rng, 0.15, 0.2, 0.09, 0.24), lognormal(rng, 0.13, 0.2, 0.08, 0.2)
    dome_v = p.dome_l if s > 0 else p.dome_r
    lats = np.linspace(0.02, 0.35, 34, dtype=F32)  # medial edge of the lung base
    inside = lung_geometry(p, F32(0.5) + F32(s) * lats, np.full_like(lats, dome_v - 0.04))[0] > 0.005
    lat_m = float(lats[np.argmax(inside)]) if inside.any() else 0.15
    lat_h, lat_b = lat_m + 0.01, lat_m + width
    v_b = dome_v + p.dome_k * (lat_b - p.dome_lat) ** 2
    v_h = v_b - height
    lo, hi = sorted((0.5 + s * (lat_h - 0.05), 0.5 + s * (lat_b + 0.02)))
    rows, cols, U, V, lung = ctx.window(lo, v_h - 0.02, hi, v_b + 0.1)
    lat = F32(s) * (U - F32(0.5))
    cross = ((lat - F32(lat_h)) * F32(v_b - v_h) - (V - F32(v_h)) * F32(lat_b - lat_h)) / F32(math.hypot(width, height))
    region = smoothstep(0.004, -0.004, cross) * smoothstep(-0.005, 0.005, V - F32(v_h)) * side_mask(U, s)
    return Mark(rows, cols, F32(0.2 * ctx.strength) * region * lung * (F32(0.7) + F32(0.3) * smoothstep(v_h, v_b, V)))


def effusion(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Basal fluid: fills the costophrenic angle, upper border a meniscus rising towards the chest wall."""
    p = ctx.params
    s = -1.0 if rng.random() < 0.6 else 1.0
    dome_v = p.dome_l if s > 0 else p.dome_r
    lat_wall = p.lung_cx + p.lung_rx
    angle_v = dome_v + p.dome_k * (lat_wall - 0.02 - p.dome_lat) ** 2
    v_top = angle_v - lognormal(rng, 0.27, 0.3, 0.08, 0.45)
    curve = max(dome_v - 0.015 - v_top, 0.02) / (lat_wall - p.dome_lat) ** 2
    lo, hi = sorted((0.5 + s * 0.02, 0.5 + s * (lat_wall + 0.03)))
    rows, cols, U, V, lung = ctx.window(lo, v_top - 0.02, hi, angle_v + 0.08)
    lat = F32(s) * (U - F32(0.5))
    below = V - (F32(v_top) + F32(curve) * (F32(lat_wall) - lat) ** 2)
    fluid = F32(0.55) * smoothstep(-0.004, 0.02, below) + F32(0.45) * smoothstep(0.0, 0.12, below)
    return Mark(rows, cols, F32(0.32 * ctx.strength) * fluid * lung * side_mask(U, s))


def infiltration(ctx: Ctx, rng: np.random.Generator) -> Mark:
    rx, ry = lognormal(rng, 0.14, 0.25, 0.07, 0.22), lognormal(rng, 0.16, 0.25, 0.08, 0.24)
    u, v, _ = place(ctx, rng, 0.45, (0.4, 0.66), (0.08, 0.3), 0.0)
    rows, cols, U, V, lung = ctx.window(u - rx, v - ry, u + rx, v + ry)
    q2 = ((U - F32(u)) / F32(rx)) ** 2 + ((V - F32(v)) / F32(ry)) ** 2
    patches = F32(0.3) + F32(0.7) * smoothstep(-0.8, 1.0, upsample(rng.standard_normal((9, 9)), U.shape))
    return Mark(rows, cols, F32(0.13 * ctx.strength) * np.clip(1 - q2, 0, 1) ** F32(1.5) * patches * lung)


def airspace(ctx: Ctx, rng, density: float, patchiness: float, bronchograms: int, v_range, scale: float = 1.0) -> Mark:
    """Lobar/segmental opacity with a sharp fissure border on one side and optional air bronchograms."""
    rx, ry = scale * lognormal(rng, 0.125, 0.2, 0.07, 0.19), scale * lognormal(rng, 0.155, 0.2, 0.08, 0.23)
    u, v, s = place(ctx, rng, 0.55, v_range, (0.1, 0.3), 0.02 / scale)
    rows, cols, U, V, lung = ctx.window(u - rx, v - ry, u + rx, v + ry)
    env = smoothstep(1.0, 0.6, np.sqrt(((U - F32(u)) / F32(rx)) ** 2 + ((V - F32(v)) / F32(ry)) ** 2))
    fissure = rng.choice([-1.0, 0.0, 1.0])  # sharp flat upper or lower border
    if fissure:
        env = env * smoothstep(-0.003, 0.003, F32(fissure) * (V - F32(v - fissure * 0.6 * ry)))
    tex = upsample(rng.standard_normal((6, 6)), U.shape)
    opacity = env * (1 - F32(patchiness) * smoothstep(-0.5, 1.5, tex))
    hx, hy = 0.5 + s * 0.1, ctx.params.hilum_v
    base = math.atan2(v - hy, u - hx)
    width = F32(max(0.006, 1.2 / ctx.canvas.size))
    for _ in range(bronchograms):
        ang, length = base + rng.uniform(-0.6, 0.6), rng.uniform(0.5, 0.9) * rx
        x0, y0 = u - 0.5 * length * math.cos(ang), v - 0.5 * length * math.sin(ang)
        t = np.clip(((U - F32(x0)) * F32(math.cos(ang)) + (V - F32(y0)) * F32(math.sin(ang))) / F32(length), 0, 1)
        dist = np.hypot(U - F32(x0) - t * F32(length * math.cos(ang)), V - F32(y0) - t * F32(length * math.sin(ang)))
        opacity = opacity * (1 - F32(0.6) * bump(dist / (width * (F32(1) - F32(0.5) * t))))
    return Mark(rows, cols, F32(density * ctx.strength) * opacity * lung)


def pneumonia(ctx: Ctx, rng: np.random.Generator) -> Mark:
    return airspace(ctx, rng, 0.2, 0.3, int(rng.integers(0, 4)), (0.45, 0.66))


def consolidation(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Larger and more homogeneous than pneumonia; it runs into the lung's outline, so it takes a lobar shape."""
    return airspace(ctx, rng, 0.26, 0.08, int(rng.integers(0, 2)), (0.25, 0.65), scale=1.35)


def pneumothorax(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Apical/lateral rim of air without lung markings, bounded by the thin visceral pleural line."""
    p, n = ctx.params, ctx.canvas.size
    s = -1.0 if rng.random() < 0.6 else 1.0
    gap, reach = lognormal(rng, 0.045, 0.35, 0.018, 0.09), lognormal(rng, 0.2, 0.3, 0.1, 0.36)
    v_lim = p.apex_v + reach
    lo, hi = sorted((0.5 + s * 0.02, 0.5 + s * (p.lung_cx + p.lung_rx + 0.02)))
    rows, cols, U, V, lung = ctx.window(lo, p.apex_v - 0.03, hi, v_lim + 0.03)
    wall = ctx.anatomy.wall[rows, cols]
    lat = F32(s) * (U - F32(0.5))
    sector = smoothstep(v_lim, v_lim - 0.06, V) * smoothstep(-0.06, -0.02, lat - F32(p.lung_cx))
    sector *= side_mask(U, s) * lung
    space = smoothstep(gap + 0.003, gap - 0.003, wall) * sector
    line = bump((wall - F32(gap)) / F32(0.003 + 0.7 / n)) * sector
    vessels = ctx.anatomy.vessels[rows, cols] * F32(min(1.0, 0.4 + 0.6 * ctx.strength))
    return Mark(rows, cols, F32(0.08 * ctx.strength) * line - space * (vessels + F32(0.07 * ctx.strength)))


def pleural_thickening(ctx: Ctx, rng: np.random.Generator) -> Mark:
    p = ctx.params
    thick = lognormal(rng, 0.026, 0.3, 0.014, 0.045)
    apical, side = rng.random() < 0.5, rng.choice([-1.0, 1.0, 0.0])
    vc, half = rng.uniform(0.32, 0.55), rng.uniform(0.1, 0.2)
    rows, cols, U, V, lung = ctx.window(0.05, p.apex_v - 0.03, 0.95, 0.8)
    wall = ctx.anatomy.wall[rows, cols]
    if apical:
        sector = smoothstep(p.apex_v + 0.1, p.apex_v + 0.05, V)
    else:
        lateral = smoothstep(-0.02, 0.02, np.abs(U - F32(0.5)) - F32(p.lung_cx))
        sector = np.sqrt(bump((V - F32(vc)) / F32(half))) * lateral
    if side:
        sector = sector * side_mask(U, side)
    irregular = F32(0.006) * upsample(rng.standard_normal((12, 12)), U.shape)
    band = smoothstep(thick + 0.006, thick - 0.004, wall + irregular)
    return Mark(rows, cols, F32(0.25 * ctx.strength) * band * sector * lung)


def fibrosis(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Irregular reticular net (three warped line families), strongest in the upper/mid lung periphery."""
    p = ctx.params
    cell = lognormal(rng, 0.026, 0.15, 0.018, 0.036)
    rows, cols, U, V, lung = ctx.window(0.05, p.apex_v - 0.02, 0.95, 0.72)
    mesh = np.zeros_like(U)
    for angle in rng.uniform(0, math.pi / 3) + np.arange(3) * math.pi / 3:
        warp = upsample(rng.standard_normal((14, 14)), U.shape)
        x = U * F32(math.cos(angle)) + V * F32(math.sin(angle)) + F32(0.6 * cell) * warp
        mesh = np.maximum(mesh, bump(np.sin(x * F32(math.pi / cell)) * F32(1 / 0.3)))
    wall = ctx.anatomy.wall[rows, cols]
    weight = lung * (F32(0.3) + F32(0.7) * smoothstep(0.1, 0.02, wall)) * smoothstep(0.62, 0.35, V)
    return Mark(rows, cols, F32(ctx.strength) * (F32(0.09) * mesh + F32(0.025)) * weight)


def edema(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Bilateral perihilar (batwing) haze, blurred hilar vessels and Kerley B lines at the lateral bases."""
    p, n = ctx.params, ctx.canvas.size
    rows, cols, U, V, lung = ctx.window(0.05, p.apex_v, 0.95, 0.8)
    haze = np.zeros_like(U)
    for s in (-1.0, 1.0):
        q2 = ((U - F32(0.5 + s * 0.11)) / F32(0.16)) ** 2 + ((V - F32(p.hilum_v - 0.01)) / F32(0.2)) ** 2
        haze += np.clip(1 - q2, 0, 1) ** F32(1.5)
    wall = ctx.anatomy.wall[rows, cols]
    jitter = upsample(rng.standard_normal((16, 16)), U.shape)
    dia = diaphragm_v(p, U)
    f = (V + F32(0.004) * jitter) * F32(1 / 0.017)
    f = f - np.floor(f)
    lines = bump((f - F32(0.5)) * F32(0.017 / max(0.003, 1.2 / n)))  # thin, horizontal, 1.7 % apart
    kerley = lines * smoothstep(0.035, 0.015, wall - F32(0.006) * jitter) * smoothstep(-0.24, -0.16, V - dia)
    vessels = ctx.anatomy.vessels[rows, cols]
    delta = lung * (F32(0.12) * haze + F32(0.1) * kerley) + F32(0.5) * haze * vessels  # vessels already lung-masked
    return Mark(rows, cols, F32(ctx.strength) * delta)


def enlarge_heart(p: AnatomyParams, rng: np.random.Generator, strength: float) -> AnatomyParams:
    grow = float(np.clip(0.3 + 0.07 * rng.standard_normal(), 0.15, 0.5)) * math.sqrt(strength)
    return dataclasses.replace(p, heart_scale=p.heart_scale * (1 + grow))


def cardiomegaly(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """The enlargement comes from `enlarge_heart`; the box is the cardiac silhouette, whose lower border
    (hidden in the abdomen's density) is taken a little below the diaphragm, as readers draw it."""
    p = ctx.params
    rows, cols, U, V, _ = ctx.window(0.15, 0.2, 0.95, 0.95)
    a, b, rx, ry = p.heart_ellipse(U, V)
    heart = ((a / rx) ** 2 + (b / ry) ** 2 < 0.98) & (V < diaphragm_v(p, U) + F32(0.045))
    mark = Mark(rows, cols, heart.astype(F32))
    return dataclasses.replace(mark, delta=None, box=box_of(mark, ctx.canvas.size))


def hyperinflate(p: AnatomyParams, rng: np.random.Generator, strength: float) -> AnatomyParams:
    e = float(np.clip(0.75 + 0.2 * rng.standard_normal(), 0.4, 1.0)) * min(strength, 1.6)
    return dataclasses.replace(
        p, dome_r=p.dome_r + 0.045 * e, dome_l=p.dome_l + 0.045 * e, dome_k=p.dome_k * (1 - 0.45 * e),
        lung_ry_bot=p.lung_ry_bot + 0.04 * e, lung_rx=p.lung_rx * (1 + 0.04 * e), lung_air=p.lung_air * (1 + 0.15 * e),
        vessel=p.vessel * (1 - 0.35 * e), heart_rx=p.heart_rx * (1 - 0.1 * e), rib_space=p.rib_space * (1 + 0.06 * e))


def emphysema(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Hyperinflation comes from `hyperinflate`; here a few apical bullae (lucent, thin-walled)."""
    p = ctx.params
    rows, cols, U, V, lung = ctx.window(0.05, p.apex_v - 0.02, 0.95, 0.5)
    delta = np.zeros_like(U)
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(0.025, 0.05)
        u, v, _ = place(ctx, rng, 0.5, (p.apex_v + 0.03, 0.4), (0.12, 0.35), r)
        q = np.sqrt((U - F32(u)) ** 2 + (V - F32(v)) ** 2) / F32(r)
        delta += F32(0.05) * bump((q - 1) * F32(r / 0.004)) - F32(0.06) * smoothstep(1.0, 0.8, q)
    return Mark(rows, cols, F32(ctx.strength) * delta * lung)


def hernia(ctx: Ctx, rng: np.random.Generator) -> Mark:
    """Hiatal hernia: rounded retrocardiac density above the diaphragm, often with an air-fluid level."""
    p = ctx.params
    rx, ry = lognormal(rng, 0.065, 0.2, 0.04, 0.1), lognormal(rng, 0.05, 0.2, 0.03, 0.08)
    u = 0.52 + 0.015 * rng.standard_normal()
    v = float(diaphragm_v(p, np.float32(u))) - 0.95 * ry
    level, has_air = v - ry * rng.uniform(0.0, 0.5), rng.random() < 0.75
    rows, cols, U, V, _ = ctx.window(u - rx, v - ry, u + rx, v + ry)
    sac = dome(((U - F32(u)) / F32(rx)) ** 2 + ((V - F32(v)) / F32(ry)) ** 2)
    air = smoothstep(level + 0.003, level - 0.003, V) * smoothstep(0.0, 0.25, sac) * F32(has_air)
    return Mark(rows, cols, F32(ctx.strength) * (F32(0.28) * sac * (1 - air) - F32(0.3) * air))


FINDING_SPECS: dict[str, FindingSpec] = {
    "Atelectasis": FindingSpec(atelectasis),
    "Cardiomegaly": FindingSpec(cardiomegaly, modify=enlarge_heart),
    "Effusion": FindingSpec(effusion),
    "Infiltration": FindingSpec(infiltration),
    "Mass": FindingSpec(mass),
    "Nodule": FindingSpec(nodule),
    "Pneumonia": FindingSpec(pneumonia),
    "Pneumothorax": FindingSpec(pneumothorax),
    "Consolidation": FindingSpec(consolidation),
    "Edema": FindingSpec(edema),
    "Emphysema": FindingSpec(emphysema, modify=hyperinflate),
    "Fibrosis": FindingSpec(fibrosis),
    "Pleural_Thickening": FindingSpec(pleural_thickening),
    "Hernia": FindingSpec(hernia),
}
