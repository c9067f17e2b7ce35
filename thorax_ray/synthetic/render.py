"""Renders one synthetic frontal chest radiograph with the signatures of its findings.

Order of random draws: anatomy parameters, one seed for the findings, low-res textures, film grain.
The draws never depend on the findings, so two renders from the same RNG state differ only by their
findings; each finding gets its own generator (from the seed and its name), so adding a finding never
moves another one; and only the film grain depends on `size`, so the same RNG state gives the same
patient and findings at every resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from thorax_ray.labels import BOXED_FINDINGS, NO_FINDING
from thorax_ray.labels import FINDINGS as ALL_FINDINGS
from thorax_ray.synthetic.anatomy import film_grain, render_anatomy, sample_params, sample_textures
from thorax_ray.synthetic.findings import FINDING_SPECS, Ctx, box_of
from thorax_ray.synthetic.raster import F32, Canvas, upsample

MIN_SIZE = 32


@dataclass(frozen=True)
class Patient:
    """What the renderer may use to vary anatomy."""

    sex: str  # "M" or "F"
    age_years: float
    view_position: str  # "PA" or "AP"


MIN_DIFFICULTY, MAX_DIFFICULTY = 0.0, 3.0  # 0: signatures at twice the NIH-like contrast of 1; 3: at a quarter


def finding_strength(difficulty: float) -> float:
    """Contrast multiplier of the signatures: 2 at difficulty 0, 1 at 1, 0.5 at 2."""
    return float(2.0 ** (1.0 - difficulty))


def _validate(findings: Sequence[str], patient: Patient, size: int, difficulty: float) -> list[str]:
    if isinstance(findings, str):
        raise TypeError("findings must be a sequence of names, not a string")
    unknown = [f for f in findings if f not in FINDING_SPECS and f != NO_FINDING]
    if unknown:
        raise ValueError(f"unknown finding {unknown[0]!r}; expected one of {', '.join(ALL_FINDINGS)}")
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if patient.sex not in ("M", "F") or patient.view_position not in ("PA", "AP"):
        raise ValueError(f"patient sex must be M or F and view PA or AP, got {patient!r}")
    if not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be within [{MIN_DIFFICULTY:g}, {MAX_DIFFICULTY:g}], got {difficulty!r}")
    return list(dict.fromkeys(f for f in findings if f != NO_FINDING))  # de-duplicated, order kept


def render_chest_xray(findings: Sequence[str], patient: Patient, size: int, rng: np.random.Generator,
                      difficulty: float = 1.0) -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    """Returns (image uint8 array of shape (size, size), boxes) where boxes maps each finding of
    BOXED_FINDINGS present in `findings` to (x, y, w, h) in pixels of this image, tightly around
    where its signature was drawn (clipped to the image)."""
    names = _validate(findings, patient, size, difficulty)
    size = int(size)
    params = sample_params(patient, rng, variability=0.5 + 0.5 * difficulty)
    finding_seed = int(rng.integers(0, 2**63 - 1))
    textures = sample_textures(rng, size)  # low-res fields first, film grain (size-dependent) last

    strength = finding_strength(difficulty)
    rngs = {name: np.random.default_rng([finding_seed, ALL_FINDINGS.index(name)]) for name in names}
    for name in names:  # findings that change the anatomy itself (heart size, lung volume)
        modify = FINDING_SPECS[name].modify
        if modify is not None:
            params = modify(params, rngs[name], strength)

    canvas = Canvas.build(size, params.rot, params.zoom, (params.shift_x, params.shift_y))
    anatomy = render_anatomy(params, canvas, textures)
    ctx = Ctx(canvas, params, anatomy, strength)
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for name in names:
        mark = FINDING_SPECS[name].draw(ctx, rngs[name])
        if mark.delta is not None:
            anatomy.P[mark.rows, mark.cols] += mark.delta
        if name in BOXED_FINDINGS:
            boxes[name] = mark.box if mark.box is not None else box_of(mark, size)
    image = expose(anatomy.P, params, textures, canvas, noise_scale=0.6 + 0.4 * difficulty)
    return image, boxes


def expose(P: np.ndarray, params, textures, canvas: Canvas, noise_scale: float) -> np.ndarray:
    """Attenuation -> film brightness: exponential response, exposure gradient, vignetting, mottle, grain."""
    n = canvas.size
    bright = (1 - np.exp(-F32(params.exposure) * np.maximum(P, 0))) ** F32(1.25)
    c = (np.arange(n, dtype=F32) + F32(0.5)) / F32(n) - F32(0.5)
    gx = F32(1) + F32(params.grad_x) * c[None, :] - F32(params.vignette) * c[None, :] ** 2
    gy = F32(1) + F32(params.grad_y) * c[:, None] - F32(params.vignette) * c[:, None] ** 2
    bright = bright * gx * gy + F32(params.offset)
    bright += F32(params.mottle * noise_scale) * upsample(textures.mottle, (n, n))
    bright += F32(params.noise * noise_scale) * (F32(0.5) + bright) * film_grain(textures.grain)
    return np.clip(bright * F32(255) + F32(0.5), 0, 255).astype(np.uint8)


__all__ = ["ALL_FINDINGS", "BOXED_FINDINGS", "Patient", "render_chest_xray", "finding_strength"]
