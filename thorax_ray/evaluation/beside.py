"""Results of another evaluation set beside this one's (`jobs/evaluate.py --beside DIR`): e.g. a model trained
and tested on a random patient split next to models on the official split, in one report and one AUROC table.
Each added column keeps its own test rows and says so in its label; nothing is paired across evaluations."""
from __future__ import annotations

from collections.abc import Mapping

from thorax_ray import storage
from thorax_ray.data.splits import describe_split
from thorax_ray.evaluation.comparison import run_split


class BesideError(ValueError):
    """An evaluation to set beside that cannot be read; the message names it."""


def read_beside(uris: tuple[str, ...], endpoint_url: str | None = None) -> list[tuple[str, dict]]:
    """(uri, metrics.json) of each evaluation output folder, read before anything is written."""
    found = []
    for uri in uris:
        metrics = storage.read_json(storage.join(uri, "metrics.json"), endpoint_url=endpoint_url)
        if not metrics or not metrics.get("models"):
            raise BesideError(f"--beside {uri}: no metrics.json with models there (not an output of "
                              "jobs/evaluate.py --scores)")
        found.append((uri, metrics))
    return found


def beside_models(found: list[tuple[str, dict]], taken: set[str]) -> dict[str, dict]:
    """Model entries of the other evaluations, renamed `<model>@<split kind>` (a number added if that is taken)
    and labelled with their own data, split and test rows."""
    added: dict[str, dict] = {}
    for uri, metrics in found:
        split = run_split(metrics)
        kind = split["kind"] if split else "other"
        for name, entry in metrics["models"].items():
            key, n = f"{name}@{kind}", 2
            while key in taken or key in added:
                key, n = f"{name}@{kind}{n}", n + 1
            added[key] = dict(entry, data_split=split, evaluated_in=uri, label=_label(name, entry, metrics, split))
    return added


def _label(name: str, entry: Mapping, metrics: Mapping, split: dict | None) -> str:
    init = f"{entry['init']}; " if entry.get("init") else ""
    rows = f"{entry['n_images']} " if entry.get("n_images") else ""
    return (f"{name} ({init}{metrics.get('dataset', 'synthetic')}, {rows}{metrics.get('split', 'test')} images of a "
            f"{describe_split(split)}; evaluated separately, not paired)")
