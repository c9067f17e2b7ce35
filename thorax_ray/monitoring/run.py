"""One committed scoring run's monitoring record, `OUT/monitoring/<run_id>.json`: per finding the batch's
probability summary (mean, 5/25/50/75/95th percentiles) and its drift against the checkpoint's validation
reference (thorax_ray.monitoring.drift: PSI with the batch's bin counts, KS statistic and p-value, status),
the findings that drifted, the out-of-distribution share (thorax_ray.monitoring.ood) and the metadata sources
of the scored rows (csv, dicom, none). Written in one step (storage.write_json: local rename or one PUT) after
the run's commit, from the run's committed score rows (the scoring run reads them back with
`read_scores(run_id=..., columns=MONITORED_COLUMNS)`), so it describes exactly what readers of the scores see; a
run that scored nothing writes none.

A checkpoint without a validation reference gives a record with `available: false` and the probability
summaries only; the job prints UNAVAILABLE once and goes on. Drift is a warning: the run's scores are
committed either way (`ScoreConfig.fail_on_drift` turns it into exit code `exit_codes.DRIFTED`).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

import numpy as np

from thorax_ray import storage
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.monitoring.drift import DRIFT, KS_P_VALUE, PSI_DRIFT, PSI_MODERATE, finding_drift
from thorax_ray.monitoring.ood import (OOD_ALARM_P_VALUE, OOD_ALARM_SHARE, OOD_EXPECTED_SHARE, OOD_METHOD,
                                       OOD_QUANTILE, ood_summary)
from thorax_ray.monitoring.reference import ValidationReference

MONITORING_DIR = "monitoring"
RECORD_FORMAT = 1
UNAVAILABLE = "drift monitoring unavailable: checkpoint has no validation reference"
OOD_SCORE_COLUMN = "ood_score"
MONITORED_COLUMNS = [*FINDING_COLUMNS, OOD_SCORE_COLUMN, "metadata_source"]
THRESHOLDS = {"psi_moderate": PSI_MODERATE, "psi_drift": PSI_DRIFT, "ks_p_value": KS_P_VALUE,
              "ood_quantile": OOD_QUANTILE, "ood_expected_share": OOD_EXPECTED_SHARE,
              "ood_alarm_share": OOD_ALARM_SHARE, "ood_alarm_p_value": OOD_ALARM_P_VALUE, "ood_method": OOD_METHOD}


def record_uri(out: str, run_id: str) -> str:
    return storage.join(out, MONITORING_DIR, f"{run_id}.json")


def parse_reference(stored: dict | None) -> tuple[ValidationReference | None, str | None]:
    """(reference, None), or (None, why monitoring is unavailable)."""
    if not stored:
        return None, UNAVAILABLE
    try:
        return ValidationReference.from_dict(stored), None
    except (ValueError, KeyError, TypeError) as error:
        return None, f"drift monitoring unavailable: the checkpoint's validation reference is unreadable ({error})"


def monitor_batch(probabilities: np.ndarray, ood_scores: np.ndarray | None, metadata_sources: Iterable[str | None],
                  reference: dict | None) -> dict:
    """The monitoring part of a record for a batch's probabilities (N, 14) in FINDINGS order, its ood_scores (N,)
    (None or NaN where not computed) and metadata sources, against the checkpoint's stored `reference`."""
    parsed, unavailable = parse_reference(reference)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(FINDINGS))
    findings = {name: finding_drift(probabilities[:, i], parsed.findings[name] if parsed else None).to_dict()
                for i, name in enumerate(FINDINGS)}
    ood = None
    if parsed is not None and parsed.features is not None and ood_scores is not None:
        ood = ood_summary(np.asarray(ood_scores, dtype=np.float64), parsed.features.threshold)
    sources = Counter("none" if source is None else str(source) for source in metadata_sources)
    return {"available": parsed is not None, "unavailable": unavailable, "images": int(len(probabilities)),
            "reference_rows": parsed.rows if parsed else None, "thresholds": THRESHOLDS, "findings": findings,
            "drifted": [name for name, entry in findings.items() if entry["status"] == DRIFT], "ood": ood,
            "metadata_sources": dict(sorted(sources.items()))}


def monitor_committed_run(out: str, rows, *, run_id: str, batch_date: str, model_id: str, model_name: str,
                          reference: dict | None, endpoint_url: str | None = None) -> dict | None:
    """Writes the record (module docstring) of `run_id` from its committed score `rows` (a DataFrame with
    MONITORED_COLUMNS, as `read_scores(out, run_id=..., columns=MONITORED_COLUMNS)` gives them) and returns it;
    None when the run committed no score rows (nothing written)."""
    if not len(rows):
        return None
    scores = rows[OOD_SCORE_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
    record = {"format_version": RECORD_FORMAT, "run_id": run_id, "batch_date": batch_date, "model_id": model_id,
              "model_name": model_name, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              **monitor_batch(rows[list(FINDING_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan),
                              None if np.isnan(scores).all() else scores,
                              rows["metadata_source"].where(rows["metadata_source"].notna(), None), reference)}
    storage.write_json(record_uri(out, run_id), record, endpoint_url=endpoint_url)
    return record


def read_run_records(out: str, *, model_id: str | None = None, endpoint_url: str | None = None) -> list[dict]:
    """Every run's record under OUT/monitoring (of one model when given), by batch_date then run_id."""
    folder = storage.join(out, MONITORING_DIR)
    records = []
    for name in sorted(storage.list_names(folder, endpoint_url=endpoint_url)):
        if name.endswith(".json"):
            record = storage.read_json(storage.join(folder, name), endpoint_url=endpoint_url)
            if record and record.get("format_version") == RECORD_FORMAT and model_id in (None, record.get("model_id")):
                records.append(record)
    return sorted(records, key=lambda r: (r["batch_date"], r["run_id"]))


def raised(record: dict | None) -> bool:
    """Whether a record raises the drift flag: a finding drifted or the out-of-distribution alarm."""
    return bool(record) and (bool(record.get("drifted")) or bool((record.get("ood") or {}).get("alarm")))


def describe(record: dict, out: str) -> list[tuple[str, str]]:
    """The job summary's (label, text) lines: UNAVAILABLE, or one per drifted finding, the out-of-distribution
    line and where the record is."""
    where = record_uri(out, record["run_id"])
    if not record["available"]:
        return [("monitoring", f"{record['unavailable']} (probability summaries in {where})")]
    lines = []
    for name in record["drifted"]:
        entry = record["findings"][name]
        lines.append(("DRIFT", f"{name}: PSI {entry['psi']:.2f} (>= {PSI_DRIFT}), KS {entry['ks']:.2f} "
                               f"(p {entry['ks_p_value']:.1e}); mean probability {entry['mean']:.3f}, validation "
                               f"{entry['validation_mean']:.3f}"))
    ood = record["ood"]
    if ood is None:
        lines.append(("out-of-dist.", "no per-image score: the checkpoint's reference has no feature model"))
    else:
        lines.append(("out-of-dist.", f"{ood['flagged']} of {ood['images']} images ({ood['share']:.1%}) beyond the "
                                      f"{OOD_QUANTILE:.0%} distance {ood['threshold']:.2f} of "
                                      f"{record['reference_rows']} validation images "
                                      f"({OOD_EXPECTED_SHARE:.0%} expected)"
                      + (f"; ALARM: above {OOD_ALARM_SHARE:.0%}, p {ood['p_value']:.1e}" if ood["alarm"] else "")))
    largest = max(record["findings"], key=lambda name: record["findings"][name]["psi"])
    verdict = (f"{len(record['drifted'])} of {len(FINDINGS)} findings drifted" if record["drifted"]
               else f"no finding drifted (largest PSI {record['findings'][largest]['psi']:.2f}, {largest})")
    lines.append(("monitoring", f"{verdict}; {where}"))
    return lines
