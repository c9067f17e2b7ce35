"""Raster helpers shared by the anatomy and the findings: float32 field primitives and the pixel grid
with its anatomical coordinates."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

F32 = np.float32


def smoothstep(e0: float, e1: float, x) -> np.ndarray:
    """0 below e0, 1 above e1 (or the reverse when e1 < e0), smooth in between."""
    t = np.asarray(x, F32) - F32(e0)
    t *= F32(1.0 / (e1 - e0))
    np.clip(t, 0, 1, out=t)
    r = t * t
    t *= F32(-2)
    t += F32(3)
    r *= t
    return r


def bump(t) -> np.ndarray:
    """Compact smooth bump: 1 at t=0, 0 for |t| >= 1."""
    q = np.asarray(t, F32) ** 2
    np.subtract(F32(1), q, out=q)
    np.maximum(q, 0, out=q)
    q *= q
    return q


def dome(q2) -> np.ndarray:
    """Projected thickness of a sphere given the squared normalised radius: sqrt(1 - q2), 0 outside."""
    q = F32(1) - np.asarray(q2, F32)
    np.maximum(q, 0, out=q)
    return np.sqrt(q, out=q)


def ellipse_depth(du: np.ndarray, dv: np.ndarray, rx, ry) -> np.ndarray:
    """Approximate signed distance to an ellipse's outline, positive inside (first-order, exact on the outline).
    The radii may be arrays (e.g. a different radius above and below the centre)."""
    qx, qy = du * (F32(1) / rx), dv * (F32(1) / ry)
    gx, gy = qx / rx, qy / ry
    rho = qx * qx
    rho += qy * qy
    np.sqrt(rho, out=rho)
    rho += F32(1e-6)
    grad = gx * gx
    grad += gy * gy
    np.sqrt(grad, out=grad)
    grad += F32(1e-6)
    out = F32(1) - rho
    out *= rho
    out /= grad
    return out


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: rounds the corner where two outlines meet (radius ~k)."""
    diff = a - b
    h = F32(0.5) - F32(0.5 / k) * diff
    np.clip(h, 0, 1, out=h)
    out = b + diff * h
    h *= F32(1) - h
    h *= F32(k)
    out -= h
    return out


def upsample(low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic upsampling of a small float field to `shape` (rows, cols)."""
    if shape[0] <= 0 or shape[1] <= 0:
        return np.zeros(shape, F32)
    image = Image.fromarray(np.ascontiguousarray(low, dtype=F32))
    return np.asarray(image.resize((shape[1], shape[0]), Image.BICUBIC), dtype=F32)


@dataclasses.dataclass(frozen=True)
class Canvas:
    """Pixel grid of the output image and its anatomical coordinates (patient rotation, zoom and shift)."""

    size: int
    u: np.ndarray
    v: np.ndarray
    rot: float
    zoom: float
    shift: tuple[float, float]

    @classmethod
    def build(cls, size: int, rot: float, zoom: float, shift: tuple[float, float]) -> "Canvas":
        c = (np.arange(size, dtype=F32) + F32(0.5)) / F32(size) - F32(0.5)
        x, y = c[None, :] - F32(shift[0]), c[:, None] - F32(shift[1])
        ca, sa = F32(math.cos(rot) / zoom), F32(math.sin(rot) / zoom)
        u = F32(0.5) + ca * x + sa * y
        v = F32(0.5) - sa * x + ca * y
        return cls(size, u, v, rot, zoom, shift)

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        ca, sa = math.cos(self.rot) * self.zoom, math.sin(self.rot) * self.zoom
        x = 0.5 + self.shift[0] + ca * (u - 0.5) - sa * (v - 0.5)
        y = 0.5 + self.shift[1] + sa * (u - 0.5) + ca * (v - 0.5)
        return x * self.size, y * self.size

    def window(self, u0: float, v0: float, u1: float, v1: float) -> tuple[slice, slice]:
        """Pixel slices (rows, cols) covering the anatomical rectangle [u0, u1] x [v0, v1], clipped."""
        corners = [self.to_pixel(a, b) for a in (u0, u1) for b in (v0, v1)]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        n = self.size
        x0, x1 = max(0, int(math.floor(min(xs))) - 1), min(n, int(math.ceil(max(xs))) + 1)
        y0, y1 = max(0, int(math.floor(min(ys))) - 1), min(n, int(math.ceil(max(ys))) + 1)
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))
