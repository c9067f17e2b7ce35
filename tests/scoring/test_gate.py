"""The probability gate of a scoring run: the checkpoint's calibrated operating points by default."""
import pytest

from thorax_ray.labels import FINDINGS
from thorax_ray.scoring.gate import FALLBACK_PROBABILITY, parse_gate, resolve_gate


def _payload():
    thresholds = {f: 0.1 * (i % 9 + 1) for i, f in enumerate(FINDINGS)}
    thresholds["Hernia"] = None  # no positives in validation
    return {"epoch": 7, "operating_points": {"rule": "youden", "chosen_on": "validation", "thresholds": thresholds}}


def test_calibrated_gate_uses_the_checkpoints_operating_points():
    gate = resolve_gate("calibrated", **_payload())
    assert gate.thresholds[0] == pytest.approx(0.1) and gate.thresholds[1] == pytest.approx(0.2)
    assert gate.thresholds[FINDINGS.index("Hernia")] == FALLBACK_PROBABILITY
    described = gate.description
    assert described["kind"] == "calibrated" and described["rule"] == "youden" and described["epoch"] == 7
    assert described["thresholds"]["Cardiomegaly"] == pytest.approx(0.2)
    assert described["fallback"] == {"probability": FALLBACK_PROBABILITY, "findings": ["Hernia"]}


def test_fixed_none_and_old_checkpoints():
    assert resolve_gate(0.3, **_payload()).thresholds == (0.3,) * 14
    assert resolve_gate(0.3, **_payload()).description == {"kind": "fixed", "probability": 0.3}
    assert resolve_gate(None, **_payload()).thresholds is None
    old = resolve_gate("calibrated", None, epoch=1)  # written before checkpoints had operating points
    assert old.thresholds == (FALLBACK_PROBABILITY,) * 14 and "no operating points" in old.description["reason"]


def test_parse_gate():
    assert parse_gate("calibrated") == "calibrated" and parse_gate("0.7") == 0.7
    assert parse_gate("-1") is None and parse_gate("none") is None and parse_gate(None) is None
    for bad in ("high", "1.5"):
        with pytest.raises(ValueError, match="probability"):
            parse_gate(bad)
