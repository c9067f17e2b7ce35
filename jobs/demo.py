"""The main job, end to end on the embedded default (local Ray, the synthetic dataset generated on
first use): generate -> manifest -> prepare -> train CNN, metadata MLP and fusion -> score with
attribution maps -> evaluate; and the CNN again on a random patient split (CheXNet's 70/10/20), evaluated
on its own test rows and set beside the others in the same report. Ends with the headline comparison table
and the path of report.html.

    python jobs/demo.py [--data data/demo] [--epochs 20] [--out out/demo]

Every stage reuses what an earlier run left (dataset, prepared shards, finished training runs,
already-scored images), so a second run is quick.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time

from thorax_ray.cli import job_parser, run_main, setup_logging
from thorax_ray.interrupts import Interrupted
from thorax_ray.ray_setup import init_ray
from thorax_ray.synthetic.demo import DEMO_DATA, DEMO_DIFFICULTY, DEMO_IMAGES, DEMO_SIZE, ensure_demo_dataset

DEMO_MODELS = {  # name -> model section (small_cnn's default output stride 8: 16x16 heatmaps at 128 px)
    "small_cnn": {"name": "small_cnn"},
    # patient information alone (age, sex, view position), and with follow-up # (a care-intensity proxy that
    # differs between the official train and test lists; shown beside, not in, the CNN comparison)
    "mlp": {"name": "mlp"},
    "mlp_follow_up": {"name": "mlp", "metadata_features": ["age", "sex", "view_position", "follow_up"]},
    "fusion": {"name": "fusion", "backbone": "small_cnn"},
}
RANDOM_SPLIT_MODELS = ("small_cnn",)  # trained again on the random patient split, shown beside
RANDOM_SPLIT = "random"
SCORE_JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "score.py")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("--data", default=DEMO_DATA, help="dataset folder (generated if missing)")
    parser.add_argument("--images", type=int, default=DEMO_IMAGES, help="images to generate on first use")
    parser.add_argument("--image-size", type=int, default=DEMO_SIZE, help="side of the generated PNGs")
    parser.add_argument("--difficulty", type=float, default=DEMO_DIFFICULTY,
                        help="synthetic signature difficulty on first use (0 easy .. 3 hard; 1 = NIH-like)")
    parser.add_argument("--size", type=int, default=128, help="model input side (prepared shards)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of each CNN (the MLPs train half as many)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers of each model")
    parser.add_argument("--out", default="out/demo", help="runs, scores and the evaluation go here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the models")
    parser.add_argument("--verbose", action="store_true", help="Ray's own output on the console too")
    return parser.parse_args(argv)


def stage(name: str, started: float) -> None:
    print(f"\n[demo] === {name} (t={time.monotonic() - started:.0f} s) ===", flush=True)


def prepare_shards(data: str, out: str, size: int, split_kind: str = "official") -> None:
    from thorax_ray.data.pipeline import ImageConfig
    from thorax_ray.data.prepare import PrepareConfig, prepare
    from thorax_ray.data.shards import read_commit
    from thorax_ray.data.splits import SplitConfig

    record = read_commit(out)
    if record is not None and record["size"] == size:
        print(f"[demo] reusing prepared shards in {out} (version {record['version']})")
        return
    print(prepare(PrepareConfig(data=data, out=out, image=ImageConfig(size=size), split=SplitConfig(kind=split_kind),
                                overwrite=record is not None)).format())


def train_models(prepared: str, args: argparse.Namespace, models: dict[str, dict] = DEMO_MODELS,
                 suffix: str = "") -> dict[str, str]:
    from thorax_ray.checkpoint import run_metrics
    from thorax_ray.train.config import TrainConfig
    from thorax_ray.train.train import fit

    runs = {}
    for name, model in models.items():
        epochs = args.epochs if model["name"] != "mlp" else max(1, args.epochs // 2)  # the MLP converges sooner
        config = TrainConfig.from_dict({
            "data": {"data": prepared, "size": args.size, "batch_size": 32},
            "model": model, "optim": {"epochs": epochs, "lr": 2e-3, "scheduler": "cosine"},
            "run": {"storage": os.path.join(args.out, "runs"), "name": f"demo-{name}{suffix}", "workers": args.workers,
                    "seed": args.seed},
        })
        run_dir = os.path.abspath(os.path.join(args.out, "runs", f"demo-{name}{suffix}"))
        done = run_metrics(run_dir)
        if done and done.get("epochs_run", 0) >= epochs:
            print(f"[demo] reusing finished run {run_dir}")
        else:
            result = fit(config)
            if result.error:
                raise RuntimeError(f"training {name} failed: {result.error}")
        runs[name] = run_dir
    return runs


def score_models(runs: dict[str, str], prepared: str, args: argparse.Namespace, suffix: str = "") -> dict[str, str]:
    """Each model scored by the score job as a user runs it, in its own process with its own Ray on this
    machine's cores. Not in the demo's Ray: that one advertises extra CPUs for training's data tasks, so
    scoring's read tasks and actors there started more worker processes than the cores run (and Ray's
    warning about it reached the console)."""
    outputs = {}
    for name, run_dir in runs.items():
        out = os.path.abspath(os.path.join(args.out, "scores", name + suffix))
        command = [sys.executable, SCORE_JOB, "--checkpoint", run_dir, "--input", prepared, "--out", out,
                   "--batch-size", "64"]
        if name == "mlp_follow_up":  # its probabilities are all the report uses
            command += ["--method", "none"]
        if args.verbose:
            command.append("--verbose")
        print(f"[demo] {' '.join(shlex.quote(part) for part in command[1:])}", flush=True)
        job = subprocess.Popen(command)
        try:
            code = job.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the job too: it gives back its lease and staging, then ends
            job.wait()
            raise
        stopped = Interrupted.from_exit_code(code)
        if stopped is not None:  # the job was stopped (Ctrl-C reached it, or it was signalled): so is the demo
            raise stopped
        if code != 0:
            raise RuntimeError(f"scoring {name} failed (exit {code}; its output is above)")
        outputs[name] = out
    return outputs


def evaluate(outputs: dict[str, str], data: str, out: str, beside: tuple[str, ...] = ()) -> dict:
    from thorax_ray.evaluation.evaluate import EvaluationConfig, evaluate_scores
    from thorax_ray.scoring import read_scores

    return evaluate_scores(EvaluationConfig(scores=tuple(outputs.items()), data=data, out=out, beside=beside),
                           read_scores)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    started = time.monotonic()
    stage("dataset", started)
    generated = ensure_demo_dataset(args.data, images=args.images, size=args.image_size, seed=args.seed,
                                    difficulty=args.difficulty)
    prepared = os.path.normpath(args.data) + f"-prepared-{args.size}"
    if generated:  # shards, runs and scores of an earlier dataset would be reused as if they were of this one
        for stale in (prepared, f"{prepared}-{RANDOM_SPLIT}",
                      *(os.path.join(args.out, part) for part in ("runs", "scores", "evaluation",
                                                                  f"evaluation-{RANDOM_SPLIT}-split"))):
            if os.path.exists(stale):
                print(f"[demo] new dataset: removing {stale} (made from the previous one)")
                shutil.rmtree(stale)
    init_ray(verbose=args.verbose)
    stage(f"prepare -> {prepared}", started)
    prepare_shards(args.data, prepared, args.size)
    stage(f"train {', '.join(DEMO_MODELS)}", started)
    runs = train_models(prepared, args)
    stage("score with attribution maps", started)
    outputs = score_models(runs, prepared, args)
    random_prepared, suffix = f"{prepared}-{RANDOM_SPLIT}", f"-{RANDOM_SPLIT}-split"
    stage(f"{', '.join(RANDOM_SPLIT_MODELS)} on a random patient split: prepare -> {random_prepared}, train, score",
          started)
    prepare_shards(args.data, random_prepared, args.size, RANDOM_SPLIT)
    random_runs = train_models(random_prepared, args, {m: DEMO_MODELS[m] for m in RANDOM_SPLIT_MODELS}, suffix)
    random_outputs = score_models(random_runs, random_prepared, args, suffix)
    stage("evaluate (each split on its own test rows, side by side in one report)", started)
    random_evaluation = os.path.join(args.out, f"evaluation{suffix}")
    evaluate(random_outputs, random_prepared, random_evaluation)
    metrics = evaluate(outputs, prepared, os.path.join(args.out, "evaluation"), beside=(random_evaluation,))
    print("\n" + metrics["table"])
    print(f"\n[demo] finished in {time.monotonic() - started:.0f} s")
    check_report(metrics["report"])
    print(f"[demo] report: {os.path.abspath(metrics['report'])}")
    return 0


def check_report(report: str) -> None:
    """Renders report.html in headless Chromium when it is installed and says whether its plots show."""
    from thorax_ray.evaluation.chromium import RenderError, find_chromium, render_report

    if find_chromium() is None:
        print("[demo] (install Debian's chromium to have the report rendered and checked headlessly)")
        return
    try:
        print(f"[demo] {render_report(report).format()}")
    except RenderError as error:
        print(f"[demo] could not render the report: {error}")


if __name__ == "__main__":
    run_main(main)
