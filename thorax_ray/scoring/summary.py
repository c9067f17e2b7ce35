"""What one scoring run did, as the job prints it."""
from __future__ import annotations

from dataclasses import dataclass, field

from thorax_ray import storage
from thorax_ray.models.tta import NO_TTA
from thorax_ray.monitoring.run import describe, raised
from thorax_ray.scoring.output import QUARANTINE_DIR, SCORES_DIR


@dataclass
class ScoreSummary:
    out: str
    input: str
    run_id: str
    batch_date: str
    model_id: str
    model_name: str
    method: str
    input_rows: int
    scored: int
    skipped: int
    quarantined: dict[str, int]
    deferred: int
    files: int
    bytes: int
    elapsed_s: float
    compute_s: float
    model_s: float
    actors: str  # the pool's "min..max" actors, with "GPU" when on GPUs
    commit: str | None = None
    unknown_size: int = 0  # scored images whose original size was unknown: heatmaps but no boxes
    overlays: list[str] = field(default_factory=list)
    ignored: int = 0  # hidden files of a folder input
    metadata_sources: dict[str, int] = field(default_factory=dict)  # scored rows per metadata_source
    ood_warning: str | None = None
    tta: str | None = None  # the test-time augmentation of the probabilities (thorax_ray.models.tta kind)
    monitoring: dict | None = None  # the run's monitoring record (thorax_ray.monitoring.run); None: nothing scored

    @property
    def drifted(self) -> bool:
        """Whether the run raised the drift flag (a finding drifted, or the out-of-distribution alarm)."""
        return raised(self.monitoring)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def images_per_s(self) -> float:
        return self.scored / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def compute_images_per_s(self) -> float:
        """Images per second of actor time (time spent inside the scorer, summed over actors)."""
        return self.scored / self.compute_s if self.compute_s > 0 else 0.0

    @property
    def bytes_per_image(self) -> float:
        return self.bytes / self.scored if self.scored else 0.0

    def format(self) -> str:
        quarantine = ", ".join(f"{reason} {n}" for reason, n in sorted(self.quarantined.items())) or "none"
        lines = [
            f"run {self.run_id} (batch_date {self.batch_date}), model {self.model_name} model_id {self.model_id}, "
            f"method {self.method}" + (f", tta {self.tta} (probabilities: mean over its views)"
                                       if self.tta not in (None, NO_TTA) else ""),
            f"input            {self.input} ({self.input_rows} files"
            + (f"; {self.ignored} hidden files ignored)" if self.ignored else ")"),
            f"scored           {self.scored}"
            + (" (metadata: " + ", ".join(f"{k} {v}" for k, v in sorted(self.metadata_sources.items())) + ")"
               if self.metadata_sources else ""),
            f"skipped          {self.skipped} (already scored by this model_id)",
            f"quarantined      {self.quarantined_total} ({quarantine})",
        ]
        if self.unknown_size:
            lines.append(f"no boxes         {self.unknown_size} (original size unknown: source PNG unreadable)")
        if self.deferred:
            lines.append(f"deferred         {self.deferred} (over --max-images; scored by a later run)")
        lines += [
            f"output           {storage.join(self.out, SCORES_DIR)} ({self.files} files, {self.bytes} bytes, "
            f"{self.bytes_per_image:.0f} bytes/image); quarantine {storage.join(self.out, QUARANTINE_DIR)}",
            f"commit           {self.commit or 'none'}",
            f"elapsed {self.elapsed_s:.1f} s, {self.images_per_s:.1f} images/s end to end; "
            f"{self.compute_images_per_s:.1f} images/s of scorer time ({self.compute_s:.2f} s in {self.actors} "
            f"actors, of which model/attribution {self.model_s:.2f} s)",
        ]
        if self.ood_warning:
            lines.append(f"WARNING          {self.ood_warning}")
        if self.monitoring:
            lines += [f"{label:<16} {text}" for label, text in describe(self.monitoring, self.out)]
        if self.overlays:
            lines.append(f"overlays         {len(self.overlays)} PNGs in {self.overlays[0].rsplit('/', 1)[0]}")
        return "\n".join(lines)
