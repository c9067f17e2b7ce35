"""Procedural anatomy of a frontal chest radiograph.

Everything is drawn as an attenuation map `P` (0 = air, ~1 = mediastinum, more = bone) on anatomical
coordinates `(u, v)`: both in [0, 1] for an unrotated, unshifted patient, `u` to the image's right (the
patient's left on a PA film), `v` downwards. `lat = |u - 0.5|` is the distance from the midline and `s` is
-1 on the image-left half (patient's right lung) and +1 on the image-right half.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from thorax_ray.synthetic.raster import F32, Canvas, bump, dome, ellipse_depth, smooth_min, smoothstep, upsample


@dataclasses.dataclass
class AnatomyParams:
    """One patient's anatomy and film; all lengths in normalised units."""

    rot: float = 0.0
    zoom: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    body_w: float = 0.47
    body_density: float = 1.0
    lung_cx: float = 0.215  # lung ellipse centre, distance from the midline
    lung_rx: float = 0.19
    lung_cy: float = 0.58
    apex_v: float = 0.11
    lung_ry_bot: float = 0.4
    lung_air: float = 0.75
    dome_r: float = 0.625  # patient's right hemidiaphragm (image left), higher
    dome_l: float = 0.655
    dome_k: float = 1.6
    dome_lat: float = 0.19
    med_w: float = 0.05
    knob: float = 0.04
    heart_cx: float = 0.545
    heart_cy: float = 0.575
    heart_rx: float = 0.17
    heart_ry: float = 0.125
    heart_tilt: float = 0.45
    heart_scale: float = 1.0
    heart_density: float = 0.07
    spine_w: float = 0.032
    spine_density: float = 0.16
    spine_phase: float = 0.0
    rib_space: float = 0.058
    rib_curv: float = 2.0
    rib_v0: float = 0.085
    rib_v0a: float = 0.16
    rib_density: float = 0.085
    clav_med: float = 0.215
    clav_lat: float = 0.135
    clav_density: float = 0.2
    scap_lat: float = 0.40
    vessel: float = 0.07
    hilum_v: float = 0.45
    breast: float = 0.0
    bubble: float = 0.1
    exposure: float = 1.25
    offset: float = 0.03
    grad_x: float = 0.0
    grad_y: float = 0.0
    vignette: float = 0.1
    noise: float = 0.018
    mottle: float = 0.007

    def heart_centre(self) -> tuple[float, float]:
        """Enlargement moves the centre to the patient's left (image right) and down."""
        return self.heart_cx + 0.05 * (self.heart_scale - 1), self.heart_cy + 0.03 * (self.heart_scale - 1)

    def heart_ellipse(self, u: np.ndarray, v: np.ndarray):
        """Heart coordinates along its tilted axes and its radii (tilted ellipse, apex down and to the right)."""
        sc = self.heart_scale
        cu, cv = self.heart_centre()
        du, dv = u - F32(cu), v - F32(cv)
        c, s = F32(math.cos(self.heart_tilt)), F32(math.sin(self.heart_tilt))
        return c * du + s * dv, c * dv - s * du, F32(self.heart_rx * sc), F32(self.heart_ry * (1 + 1.25 * (sc - 1)))


def sample_params(patient, rng: np.random.Generator, variability: float) -> AnatomyParams:
    """Draws a patient's anatomy. Always the same number of draws, whatever the patient or findings."""
    z = np.clip(rng.standard_normal(40), -2.5, 2.5) * variability
    uni = rng.random(4)
    ap, female = patient.view_position == "AP", patient.sex == "F"
    age = float(patient.age_years)
    child, old = max(0.0, (16 - age) / 16), max(0.0, (age - 50) / 40)
    return AnatomyParams(
        rot=0.035 * z[0] * (1.5 if ap else 1.0),
        zoom=1.0 + 0.04 * z[1] + (0.03 if ap else 0.0),
        shift_x=0.015 * z[2], shift_y=0.02 * z[3],
        body_w=(0.455 if female else 0.47) + 0.02 * z[4],
        body_density=1.0 + 0.05 * z[5],
        lung_cx=0.215 + 0.008 * z[6],
        lung_rx=(0.183 if female else 0.19) + 0.012 * z[7],
        lung_cy=0.58 + 0.015 * z[8],
        apex_v=0.11 + 0.015 * z[9],
        lung_air=0.75 + 0.04 * z[10],
        dome_r=0.625 + 0.025 * z[11] - (0.03 if ap else 0.0),
        dome_l=0.655 + 0.025 * z[11] + 0.01 * z[12] - (0.03 if ap else 0.0),
        dome_k=1.6 + 0.2 * z[13],
        dome_lat=0.19 + 0.015 * z[14],
        med_w=0.055 + 0.006 * z[15] + (0.008 if ap else 0.0),
        knob=0.04 + 0.01 * z[16] + 0.015 * old,
        heart_cx=0.545 + 0.01 * z[17],
        heart_cy=0.57 + 0.012 * z[18],
        heart_rx=0.17 + 0.01 * z[19],
        heart_ry=0.13 + 0.008 * z[20],
        heart_tilt=0.45 + 0.08 * z[21],
        heart_scale=(1.1 if ap else 1.0) + 0.06 * child,
        spine_w=0.032 + 0.003 * z[22],
        spine_phase=float(uni[0]),
        rib_space=0.058 + 0.004 * z[23],
        rib_curv=(2.6 + 0.3 * z[24]) * (1 - 0.3 * child),
        rib_v0=0.085 + 0.01 * z[25],
        rib_v0a=0.16 + 0.01 * z[26],
        rib_density=(0.085 + 0.012 * z[27]) * (1 - 0.2 * old),
        clav_med=0.215 + 0.015 * z[28] - (0.03 if ap else 0.0),
        clav_lat=0.135 + 0.02 * z[29] - (0.01 if ap else 0.0),
        scap_lat=(0.32 if ap else 0.40) + 0.02 * z[30],
        vessel=0.11 + 0.015 * z[31],
        hilum_v=0.45 + 0.015 * z[32],
        breast=max(0.0, 0.1 + 0.04 * z[33]) if female else 0.0,
        bubble=0.2 * float(uni[1]),
        exposure=(1.25 + 0.12 * z[34]) * (0.92 if ap else 1.0),
        offset=0.03 + 0.015 * abs(z[35]),
        grad_x=0.06 * z[36], grad_y=0.06 * z[37],
        vignette=0.1 + 0.05 * float(uni[2]),
        noise=max(0.006, 0.018 + 0.004 * z[38]),
        mottle=0.007 + 0.003 * abs(z[39]),
    )


@dataclasses.dataclass(frozen=True)
class Textures:
    """Random fields drawn with the anatomy (before any finding), so findings never change them."""

    warp: np.ndarray  # (2, n, n) low-res warps for the lung markings
    mottle: np.ndarray  # low-res exposure mottle
    grain: np.ndarray  # full-res film noise


def sample_textures(rng: np.random.Generator, size: int) -> Textures:
    warp = rng.standard_normal((2, 12, 12)).astype(F32)
    mottle = rng.standard_normal((32, 32)).astype(F32)
    grain = rng.integers(0, 256, (size, size), dtype=np.uint8)  # uniform, unit-variance after `film_grain`
    return Textures(warp, mottle, grain)


def film_grain(grain: np.ndarray) -> np.ndarray:
    noise = grain.astype(F32)
    noise -= F32(127.5)
    noise *= F32(1 / 73.9)
    return noise


def lung_geometry(p: AnatomyParams, u: np.ndarray, v: np.ndarray, outside_heart: np.ndarray | None = None):
    """Returns (depth inside the lungs, depth inside the chest-wall ellipse, side s); depths > 0 inside.
    `outside_heart` (distance outside the cardiac outline) is computed here unless given."""
    right = u >= 0.5
    s = np.where(right, F32(1), F32(-1))
    lat = np.abs(u - F32(0.5))
    dv = v - F32(p.lung_cy)
    ry = np.where(dv < 0, F32(p.lung_cy - p.apex_v), F32(p.lung_ry_bot))
    wall = ellipse_depth(lat - F32(p.lung_cx), dv, F32(p.lung_rx), ry)
    knob = F32(p.knob) * bump((v - F32(0.30)) * F32(1 / 0.07)) + F32(0.018) * bump((v - F32(0.4)) * F32(1 / 0.06))
    svc = F32(0.012) * smoothstep(0.2, 0.45, v)
    med = lat - (F32(p.med_w) + F32(0.01) * smoothstep(0.3, 0.5, v) + np.where(right, knob, svc))
    dd = lat - F32(p.dome_lat)
    dia = np.where(right, F32(p.dome_l), F32(p.dome_r)) + F32(p.dome_k) * dd * dd - v
    dia /= np.sqrt(1 + (F32(2 * p.dome_k) * dd) ** 2)
    if outside_heart is None:
        outside_heart = -ellipse_depth(*p.heart_ellipse(u, v))
    depth = np.minimum(np.minimum(wall, dia), smooth_min(med, outside_heart, 0.05))
    return depth, wall, s


def diaphragm_v(p: AnatomyParams, u: np.ndarray) -> np.ndarray:
    dd = np.abs(u - F32(0.5)) - F32(p.dome_lat)
    return np.where(u >= 0.5, F32(p.dome_l), F32(p.dome_r)) + F32(p.dome_k) * dd * dd


@dataclasses.dataclass
class Anatomy:
    P: np.ndarray  # attenuation map (findings are added to it)
    lung: np.ndarray  # soft lung mask
    wall: np.ndarray  # depth inside the chest-wall ellipse (-1 far outside it)
    vessels: np.ndarray  # lung markings (already in P)


def body(p: AnatomyParams, lat: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Soft tissue: neck, sloping shoulders, chest wall thinning towards the skin line."""
    width = F32(p.body_w + 0.04) - F32(0.04) * smoothstep(0.1, 0.3, v)
    q = lat / width
    thick = F32(0.28) + F32(0.82) * dome(q * q)
    top = F32(0.1) * smoothstep(0.05, 0.13, lat) + F32(0.05) * smoothstep(0.12, 0.5, lat) - F32(0.05)
    thick *= smoothstep(0, 0.03, v - top)
    thick *= q < 1
    if p.body_density != 1:
        thick *= F32(p.body_density)
    return thick


def ribs(p: AnatomyParams, lat: np.ndarray, v: np.ndarray, wall: np.ndarray) -> np.ndarray:
    """Posterior ribs (arching laterally) and fainter anterior ribs (descending medially) as periodic bands."""
    post_r = (v - F32(p.rib_v0) - F32(p.rib_curv) * (lat - F32(0.15)) ** 2) * F32(1 / p.rib_space)
    out = _bands(post_r, 0.42, 10) * smoothstep(0.02, 0.05, lat)
    m = F32(0.42) - lat
    ant_r = (v - F32(p.rib_v0a) - F32(0.35) * m - F32(0.5) * m * m) * F32(1 / (1.15 * p.rib_space))
    out += _bands(ant_r, 0.34, 6) * smoothstep(0.1, 0.2, lat) * F32(0.6)
    out *= smoothstep(-0.035, -0.012, wall)
    out *= F32(p.rib_density)
    return out


def _bands(r: np.ndarray, width: float, count: int) -> np.ndarray:
    """Bands of relative `width` at integer steps of r (ribs), flat-topped with steep cortical edges."""
    t = r - np.floor(r)
    t *= F32(1 / width)
    np.minimum(t, 1, out=t)
    t *= F32(1) - t
    t *= F32(4) * ((r >= 0) & (r < count))
    return np.sqrt(np.sqrt(t, out=t), out=t)


def clavicles(p: AnatomyParams, lat: np.ndarray, v: np.ndarray) -> np.ndarray:
    t = (lat - F32(0.03)) * F32(1 / 0.3)
    tc = np.clip(t, 0, 1)
    centre = F32(p.clav_med) + F32(p.clav_lat - p.clav_med) * t - F32(0.02) * np.sin(F32(math.pi) * tc)
    half = F32(0.019) - F32(0.006) * tc
    prof = np.sqrt(np.sqrt(dome(((v - centre) / half) ** 2)))
    return F32(p.clav_density) * prof * smoothstep(-0.05, 0.02, t) * smoothstep(1.05, 0.95, t)


def spine(p: AnatomyParams, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    col = dome(((u - F32(0.5)) / F32(p.spine_w)) ** 2)
    discs = F32(0.85) + F32(0.15) * np.cos(F32(2 * math.pi / 0.052) * (v - F32(p.spine_phase * 0.052)))
    return F32(p.spine_density) * col * discs * smoothstep(0.0, 0.06, v)


def trachea(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    air = bump((u - F32(0.5)) * F32(1 / 0.016)) * smoothstep(0.0, 0.05, v) * smoothstep(0.38, 0.34, v)
    for dx in (-0.07, 0.08):  # main bronchi from the carina
        t = np.clip((v - F32(0.36)) * F32(1 / 0.08), 0, 1)
        bronchus = bump((u - F32(0.5) - F32(dx) * t) * F32(1 / 0.011)) * (v > 0.36) * smoothstep(0.46, 0.43, v)
        air = np.maximum(air, bronchus)
    return F32(-0.08) * air


VESSEL_LAYERS = ((9, 0.0, 0.16, 1.0), (19, 0.07, 0.3, 0.7), (34, 0.15, 0.45, 0.45))  # (branches, r0, r1, weight)


def vessels(p: AnatomyParams, u, v, s: float, warp) -> np.ndarray:
    """Lung markings of one side: few thick trunks near the hilum, more and thinner curved branches outwards."""
    dx = u - F32(0.5 + s * 0.125)
    dy = v - F32(p.hilum_v - 0.025 * (s > 0))
    r = np.sqrt(dx * dx + dy * dy)
    th = np.arctan2(dy, dx)
    lines = np.zeros_like(r)
    for i, (k, r0, r1, weight) in enumerate(VESSEL_LAYERS):
        a = np.cos(F32(k) * th + F32(2.0 + i) * warp[i % 2] + F32(6 * i) * r)
        a += F32(1)
        a *= F32(0.5)
        for _ in range(3 + (i > 0)):
            a *= a
        a *= bump((r - F32((r0 + r1) / 2)) * F32(2 / (r1 - r0)))
        a *= F32(weight)
        lines += a
    lines *= smoothstep(-1.8, 0.8, warp[1])
    lines *= np.exp(-r * F32(1 / 0.3))
    lines += F32(1.2) * bump(dx * F32(1 / 0.06)) * bump(dy * F32(1 / 0.09))  # hilum
    lines *= F32(p.vessel)
    return lines


def render_anatomy(p: AnatomyParams, cv: Canvas, tex: Textures) -> Anatomy:
    u, v, n = cv.u, cv.v, cv.size
    lat = np.abs(u - F32(0.5))
    P = body(p, lat, v)
    # lungs, ribs and markings only exist inside the thorax window
    reach = p.lung_cx + p.lung_rx + 0.05
    rows, cols = cv.window(0.5 - reach, p.apex_v - 0.05, 0.5 + reach, min(p.lung_cy + p.lung_ry_bot, 0.95) + 0.05)
    lung, wall = np.zeros((n, n), F32), np.full((n, n), F32(-1))
    U, V, L = u[rows, cols], v[rows, cols], lat[rows, cols]
    depth, wall[rows, cols], _ = lung_geometry(p, U, V, outside_heart(p, cv)[rows, cols])
    edge = F32(max(0.003, 1.0 / n))
    lung[rows, cols] = smoothstep(-edge, edge, depth)
    lw = lung[rows, cols]
    P[rows, cols] -= F32(p.lung_air) * lw * (F32(0.62) + F32(0.38) * smoothstep(0.0, 0.08, wall[rows, cols]))
    P[rows, cols] += ribs(p, L, V, wall[rows, cols]) * (F32(0.45) + F32(0.55) * lw)
    vess = np.zeros((n, n), F32)
    warp = np.stack([upsample(w, (n, n)) for w in tex.warp])
    for s in (-1.0, 1.0):
        lo, hi = sorted((0.5 + s * 0.01, 0.5 + s * (p.lung_cx + p.lung_rx + 0.01)))
        r2, c2 = cv.window(lo, p.apex_v - 0.01, hi, max(p.dome_l, p.dome_r) + p.dome_k * 0.06 + 0.01)
        vess[r2, c2] = vessels(p, u[r2, c2], v[r2, c2], s, warp[:, r2, c2]) * lung[r2, c2]
    P += vess
    _add(P, cv, (0.3, 0.3, 0.85, 0.85), lambda U, V: heart(p, U, V))
    _add(P, cv, (0.5 - p.spine_w - 0.01, 0.0, 0.5 + p.spine_w + 0.01, 1.0), lambda U, V: spine(p, U, V))
    _add(P, cv, (0.4, 0.0, 0.6, 0.48), trachea)
    _add(P, cv, (0.1, 0.0, 0.9, 0.3), lambda U, V: clavicles(p, np.abs(U - F32(0.5)), V))
    bubble_box = (0.5 + p.dome_lat - 0.06, p.dome_l, 0.5 + p.dome_lat + 0.06, p.dome_l + 0.1)
    _add(P, cv, bubble_box, lambda U, V: bubble(p, U, V))
    _add(P, cv, (0.0, 0.08, 1.0, 0.6), lambda U, V: scapulae(p, np.abs(U - F32(0.5)), V))
    if p.breast > 0:
        _add(P, cv, (0.0, 0.5, 1.0, 0.81), lambda U, V: breasts(p, np.abs(U - F32(0.5)), V))
    return Anatomy(P=P, lung=lung, wall=wall, vessels=vess)


def outside_heart(p: AnatomyParams, cv: Canvas) -> np.ndarray:
    """Distance outside the cardiac outline, evaluated only near the heart (1 elsewhere, which is as good
    as exact for the lung mask: the smooth union with the mediastinum only acts within 0.05)."""
    out = np.ones((cv.size, cv.size), F32)
    reach = max(p.heart_rx, p.heart_ry) * p.heart_scale * 1.3 + 0.08
    cu, cvv = p.heart_centre()
    rows, cols = cv.window(cu - reach, cvv - reach, cu + reach, cvv + reach)
    out[rows, cols] = -ellipse_depth(*p.heart_ellipse(cv.u[rows, cols], cv.v[rows, cols]))
    return out


def _add(P: np.ndarray, cv: Canvas, box, draw) -> None:
    rows, cols = cv.window(*box)
    if rows.stop > rows.start and cols.stop > cols.start:
        P[rows, cols] += draw(cv.u[rows, cols], cv.v[rows, cols])


def heart(p: AnatomyParams, u, v) -> np.ndarray:
    a, b, rx, ry = p.heart_ellipse(u, v)
    return F32(p.heart_density) * dome((a / rx) ** 2 + (b / ry) ** 2) * smoothstep(0.01, -0.01, v - diaphragm_v(p, u))


def bubble(p: AnatomyParams, u, v) -> np.ndarray:
    """Gastric air under the left hemidiaphragm (image right)."""
    q2 = ((u - F32(0.5 + p.dome_lat)) / F32(0.05)) ** 2 + ((v - F32(p.dome_l + 0.05)) / F32(0.03)) ** 2
    return F32(-p.bubble) * dome(q2)


def scapulae(p: AnatomyParams, lat, v) -> np.ndarray:
    border = F32(p.scap_lat) + F32(0.15) * (v - F32(0.12))
    lower = F32(0.47) - F32(1.5) * (lat - F32(p.scap_lat + 0.05))
    inside = smoothstep(-0.006, 0.006, lat - border) * smoothstep(0.006, -0.006, v - lower)
    return F32(0.06) * inside * smoothstep(0.08, 0.12, v)


def breasts(p: AnatomyParams, lat, v) -> np.ndarray:
    return F32(p.breast) * dome(((lat - F32(0.29)) / F32(0.17)) ** 2 + ((v - F32(0.66)) / F32(0.14)) ** 2)
