"""The monitoring records of an output per night (`batch_date`), per model: a table and a plot over time
(`jobs/monitor.py`). A night's figures combine its runs: images and out-of-distribution counts are summed (the
night's share and alarm are recomputed from the sums, as for one run), each finding's PSI is recomputed from
the runs' bin counts summed (PSI adds up exactly that way; the KS statistic does not, so a night's drifted
findings are those that drifted in any of its runs)."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from thorax_ray import storage
from thorax_ray.labels import FINDINGS
from thorax_ray.monitoring.drift import KS_P_VALUE, PSI_DRIFT, PSI_MODERATE, population_stability_index
from thorax_ray.monitoring.ood import OOD_ALARM_SHARE, OOD_EXPECTED_SHARE, ood_alarm
from thorax_ray.monitoring.run import MONITORING_DIR


@dataclass
class Night:
    """One model's runs of one batch_date, combined."""

    batch_date: str
    model_id: str
    model_name: str
    runs: int = 0
    images: int = 0
    ood_images: int = 0
    ood_flagged: int = 0
    drifted: set[str] = field(default_factory=set)
    available: bool = True  # every run had a validation reference
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # finding -> the runs' bin counts summed
    validation_counts: dict[str, list[int]] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def psi(self) -> dict[str, float]:
        return {name: population_stability_index(self.counts[name], self.validation_counts[name])
                for name in FINDINGS if name in self.counts}

    @property
    def ood_share(self) -> float | None:
        return self.ood_flagged / self.ood_images if self.ood_images else None

    @property
    def ood_alarm(self) -> bool:
        return bool(self.ood_images) and ood_alarm(self.ood_flagged, self.ood_images)

    def add(self, record: dict) -> None:
        self.runs += 1
        self.images += record["images"]
        self.drifted.update(record.get("drifted") or [])
        self.available = self.available and bool(record["available"])
        for source, n in record.get("metadata_sources", {}).items():
            self.sources[source] = self.sources.get(source, 0) + n
        if record.get("ood"):
            self.ood_images += record["ood"]["images"]
            self.ood_flagged += record["ood"]["flagged"]
        for name, entry in record["findings"].items():
            if entry.get("counts") is not None:
                counts = np.asarray(entry["counts"])
                self.counts[name] = self.counts[name] + counts if name in self.counts else counts
                self.validation_counts[name] = entry["validation_counts"]


def nights(records: list[dict]) -> list[Night]:
    """The records combined per (model_id, batch_date), by model then date."""
    combined: dict[tuple[str, str], Night] = {}
    for record in records:
        key = (record["model_id"], record["batch_date"])
        if key not in combined:
            combined[key] = Night(record["batch_date"], record["model_id"], record["model_name"])
        combined[key].add(record)
    return [combined[key] for key in sorted(combined)]


def format_table(rows: list[Night]) -> str:
    """One block per model: a line per night (runs, images, out-of-distribution share, largest PSI, drifted
    findings, metadata sources)."""
    if not rows:
        return "no monitoring records"
    lines = []
    for model_id in dict.fromkeys(row.model_id for row in rows):
        mine = [row for row in rows if row.model_id == model_id]
        lines += [f"model {mine[0].model_name} (model_id {model_id}): drift = PSI >= {PSI_DRIFT} with KS p < "
                  f"{KS_P_VALUE}/{len(FINDINGS)}; "
                  f"out-of-distribution alarm above {OOD_ALARM_SHARE:.0%} ({OOD_EXPECTED_SHARE:.0%} expected)",
                  f"{'night':<10}  {'runs':>4}  {'images':>7}  {'ood share':>9}  {'largest PSI':<24}  "
                  f"{'drifted':<30}  metadata"]
        for row in mine:
            psi = row.psi
            largest = max(psi, key=psi.get) if psi else None
            ood = "n/a" if row.ood_share is None else f"{row.ood_share:.1%}" + (" !" if row.ood_alarm else "")
            drifted = (f"all {len(FINDINGS)}" if len(row.drifted) == len(FINDINGS) else ", ".join(sorted(row.drifted))
                       or ("-" if row.available else "no reference"))
            sources = ", ".join(f"{k} {v}" for k, v in sorted(row.sources.items()))
            lines.append(f"{row.batch_date:<10}  {row.runs:>4}  {row.images:>7}  {ood:>9}  "
                         f"{(f'{psi[largest]:.3f} {largest}' if largest else 'n/a'):<24}  {drifted:<30}  {sources}")
        lines.append("")
    return "\n".join(lines).rstrip()


def plot_nights(rows: list[Night], path: str, *, endpoint_url: str | None = None) -> str:
    """A PNG at `path` (local or s3://) of one model's nights: each finding's PSI over time with the 0.1 and
    0.25 lines, and the out-of-distribution share with the expected rate and the alarm share."""
    import matplotlib  # deferred: matplotlib (slow import)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: matplotlib (slow import)

    dates = [row.batch_date for row in rows]
    x = np.arange(len(rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    fig.suptitle(f"{rows[0].model_name} (model_id {rows[0].model_id}): drift against validation, per night")
    colours = plt.get_cmap("tab20")
    for i, name in enumerate(FINDINGS):
        values = [row.psi.get(name, np.nan) for row in rows]
        top.plot(x, values, marker="o", color=colours(i), label=name)
    top.axhline(PSI_MODERATE, color="grey", linestyle=":", label=f"moderate ({PSI_MODERATE})")
    top.axhline(PSI_DRIFT, color="red", linestyle="--", label=f"drift ({PSI_DRIFT})")
    top.set_ylabel("population stability index")
    top.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    shares = [np.nan if row.ood_share is None else 100 * row.ood_share for row in rows]
    bottom.plot(x, shares, marker="o", color="black", label="images out of distribution")
    bottom.axhline(100 * OOD_EXPECTED_SHARE, color="grey", linestyle=":", label="expected on validation")
    bottom.axhline(100 * OOD_ALARM_SHARE, color="red", linestyle="--", label="alarm share")
    bottom.set_ylabel("% of images")
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    bottom.set_xticks(x, dates, rotation=45, ha="right")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png", metadata={"Software": None})
    plt.close(fig)
    storage.write_bytes(path, buffer.getvalue(), endpoint_url=endpoint_url)
    return path


def default_plot_uri(out: str, model_id: str) -> str:
    return storage.join(out, MONITORING_DIR, f"nights-{model_id}.png")
