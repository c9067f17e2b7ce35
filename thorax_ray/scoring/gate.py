"""The probability gate of a scoring run: which findings of an image get boxes (and overlay panels).

A loss that balances classes shifts probabilities (class-balanced BCE lifts a 1 % posterior to ~0.8), so
one fixed probability means something different per finding and per loss. By default ("calibrated") a
finding is boxed when its probability reaches the checkpoint's own operating point for that finding,
chosen on the validation split at the end of that epoch (`CheckpointPayload.operating_points`, see
thorax_ray/thresholds.py). A number gates every finding at that probability; None boxes every finding.
A checkpoint without operating points (written before they existed), or a finding whose validation rows
had no positives or negatives, falls back to `FALLBACK_PROBABILITY`; the description says so.

"calibrated" names the operating points, not thorax_ray.calibration: the gate compares the RAW probability
(the column the thresholds were chosen on) with them. Given the checkpoint's calibration, the description also
gives each threshold mapped to the calibrated scale (the same decision, read on the `<finding>_calibrated`
columns) and what each threshold rests on (validation positives, bootstrap-stabilised or not).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from thorax_ray.calibration import calibrated_thresholds
from thorax_ray.labels import FINDINGS

log = logging.getLogger(__name__)

CALIBRATED = "calibrated"
FALLBACK_PROBABILITY = 0.5


@dataclass(frozen=True)
class ProbabilityGate:
    """`thresholds`: one probability per finding (FINDINGS order), None for no gate; `description`:
    JSON-able, written to the score metadata and the commit record."""

    thresholds: tuple[float, ...] | None
    description: dict = field(default_factory=dict)


def parse_gate(value: str | float | None) -> str | float | None:
    """A command-line gate: "calibrated", a probability in [0, 1], or a negative number / "none" for no gate."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str) and value.strip().lower() == CALIBRATED:
        return CALIBRATED
    try:
        probability = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"a probability gate is 'calibrated', a probability in [0, 1] or 'none'; "
                         f"got {value!r}") from None
    if probability < 0:
        return None
    if not probability <= 1:
        raise ValueError(f"a probability gate must be at most 1, got {probability}")
    return probability


def resolve_gate(setting: str | float | None, operating_points: dict | None, *, epoch: int | None = None,
                 calibration: dict | None = None) -> ProbabilityGate:
    """The gate for `setting` ("calibrated", a probability, or None) and a checkpoint's `operating_points`
    (chosen on validation after `epoch`; None for a checkpoint written before they existed) and `calibration`
    (thorax_ray.calibration; None: the calibrated columns repeat the raw ones)."""
    setting = parse_gate(setting)
    if setting is None:
        return ProbabilityGate(None, {"kind": "none", "meaning": "every boxed finding, whatever its probability"})
    if setting != CALIBRATED:
        return ProbabilityGate((float(setting),) * len(FINDINGS), {"kind": "fixed", "probability": float(setting)})
    points = operating_points
    if not points or not points.get("thresholds"):
        log.warning("the checkpoint has no operating points; gating boxes at probability %s", FALLBACK_PROBABILITY)
        return ProbabilityGate((FALLBACK_PROBABILITY,) * len(FINDINGS), {
            "kind": "fixed", "probability": FALLBACK_PROBABILITY,
            "reason": "calibrated requested, but the checkpoint has no operating points"})
    chosen = points["thresholds"]
    fallback = [f for f in FINDINGS if chosen.get(f) is None or not math.isfinite(float(chosen[f]))]
    thresholds = tuple(FALLBACK_PROBABILITY if f in fallback else float(chosen[f]) for f in FINDINGS)
    by_finding = dict(zip(FINDINGS, thresholds))
    return ProbabilityGate(thresholds, {
        "kind": CALIBRATED, "rule": points.get("rule"), "chosen_on": points.get("chosen_on", "validation"),
        "epoch": epoch, "decision": "a finding is boxed when its (raw) probability >= its threshold",
        "thresholds": by_finding, "compares": "the raw probability columns",
        "thresholds_calibrated": calibrated_thresholds(calibration, by_finding),
        "support": points.get("support"),  # validation positives per finding; None: older checkpoints
        "fallback": {"probability": FALLBACK_PROBABILITY, "findings": fallback},
    })
