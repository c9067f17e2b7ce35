"""Scoring benchmark, one run, same images and checkpoint for every figure: images/s for predictions
only (`--method none`), predictions + all-class maps from the one-forward fast path (`fast_cam`), and
predictions + naive per-class Captum LayerGradCam (`gradcam`, 14 backward passes); output bytes per
image; peak memory when scoring N vs 4N images (streaming should keep it flat).

Each figure is a full `thorax_ray.scoring.score` run (Ray Data, decode + a model actor) into a fresh
output. Rates are given two ways: end to end (scored images / wall time of the run, including actor
start-up and checkpoint loading) and in-actor (scored images / time spent inside the scorer's batch
calls, summed over actors). "model s" is the part of the actor time spent in the model forward /
attribution (incl. normalising inputs); the rest is map pooling/normalising/encoding and boxes.

    python bench/score.py [--images 200] [--size 224] [--model small_cnn] [--batch-size 32]

`--model mlp` (the metadata-only model) measures the metadata attributions instead: `metadata_ig` (vectorised
over targets and steps) against its Captum reference (`CaptumMetadataIntegratedGradients`: Captum's
IntegratedGradients once per target, the path `metadata_ig` took before), in this process, on the same
checkpoint, rows (the synthetic CSV's, encoded) and batches, at the scoring actor's threads, best of
`ATTRIBUTION_ROUNDS` interleaved rounds; the ratio and the largest difference between the two are printed.
Then scoring runs of the MLP with predictions only and with `metadata_ig`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PeakMemory, emit, timed  # noqa: E402

ATTRIBUTION_ROUNDS = 3  # in-process metadata attribution timing: best of this many rounds per path


def make_checkpoint(folder: str, model_name: str, size: int):
    import torch

    from thorax_ray.checkpoint import CheckpointPayload, save_checkpoint
    from thorax_ray.data.preprocess import preprocessing_contract
    from thorax_ray.labels import FINDINGS
    from thorax_ray.models import create_model
    from thorax_ray.synthetic.population import REAL_STATISTICS

    torch.manual_seed(0)
    model = create_model(model_name)  # random weights: the model's cost does not depend on them, but ...
    # ... the box work does (boxes are traced only for probable findings), so the output layer starts at the
    # log-odds of the real prevalences, where a trained model's probabilities sit, not at p = 0.5 for everything.
    prevalence = torch.tensor([REAL_STATISTICS[f][0] for f in FINDINGS])
    with torch.no_grad():
        model.classifier.bias.copy_(torch.log(prevalence / (1 - prevalence)))
    save_checkpoint(folder, CheckpointPayload(model_name=model_name, model_build_config=model.build_config,
                                              model_state=model.state_dict(),
                                              preprocessing=preprocessing_contract(size).to_dict()))
    return model


def metadata_attribution_rates(checkpoint: str, data: str, images: int, batch_size: int, threads: int) -> dict:
    """In-process images/s of the metadata attributions: the Captum reference and `metadata_ig`, on the
    checkpoint's model and the first `images` rows of the synthetic CSV in batches of `batch_size`, at
    `threads` torch threads; best of ATTRIBUTION_ROUNDS rounds, the two paths interleaved."""
    import torch

    from thorax_ray.attribution import get_method
    from thorax_ray.attribution.gradients import CaptumMetadataIntegratedGradients
    from thorax_ray.checkpoint import load_payload_and_id
    from thorax_ray.data.nih_csv import read_metadata
    from thorax_ray.models import build_model

    model = build_model(load_payload_and_id(checkpoint)[0]).eval()
    frame = read_metadata(os.path.join(data, "Data_Entry_2017.csv")).frame.head(images)
    features = torch.from_numpy(model.metadata_features.encode(frame))
    batches = list(features.split(batch_size))
    paths = {"captum": CaptumMetadataIntegratedGradients(model), "vectorised": get_method("metadata_ig")(model)}
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best, values = {}, {}
        for _ in range(ATTRIBUTION_ROUNDS):
            for name, method in paths.items():
                outputs, seconds = timed(lambda: [method.attribute(features=b).feature_attributions for b in batches])
                best[name] = min(best.get(name, float("inf")), seconds)
                values[name] = torch.cat(outputs)
    finally:
        torch.set_num_threads(saved)
    return {"features": int(features.shape[1]), "images": int(features.shape[0]), "threads": threads,
            "captum_ips": features.shape[0] / best["captum"], "vectorised_ips": features.shape[0] / best["vectorised"],
            "speedup": best["captum"] / best["vectorised"],
            "max_abs_diff": float((values["captum"] - values["vectorised"]).abs().max())}


def parquet_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(f, n)) for f, _, names in os.walk(root) for n in names
               if n.endswith(".parquet"))


def print_runs(args: argparse.Namespace, results: dict, gpus: float) -> None:
    header = f"{'run':<14}{'method':<12}{'images':>7}{'wall s':>9}{'e2e img/s':>11}{'actor s':>9}" \
             f"{'model s':>9}{'actor img/s':>13}{'bytes/img':>11}{'peak MB':>9}"
    print(f"\nscoring benchmark: {args.model} at {args.size} px, batch {args.batch_size}, "
          f"{'GPU' if gpus else 'CPU'} ({os.cpu_count()} cores), actor CPUs {args.actor_cpus:g}")
    print(header)
    for label, r in results.items():
        if label == "warm-up":
            continue
        print(f"{label:<14}{r['method']:<12}{r['images']:>7}{r['wall_s']:>9.1f}{r['e2e_ips']:>11.1f}"
              f"{r['compute_s']:>9.2f}{r['model_s']:>9.2f}{r['actor_ips']:>13.1f}{r['bytes_per_image']:>11.0f}{r['peak_mb']:>9.0f}")


def report_metadata(args: argparse.Namespace, results: dict, rates: dict, gpus: float) -> None:
    """The metadata MLP's table, the attribution comparison and the closing figures."""
    print_runs(args, results, gpus)
    print(f"\nmetadata attributions in-process ({rates['features']} features, {rates['images']} rows in batches of "
          f"{args.batch_size}, {rates['threads']} thread(s), best of {ATTRIBUTION_ROUNDS}): Captum IntegratedGradients "
          f"per target {rates['captum_ips']:.1f} images/s, vectorised metadata_ig {rates['vectorised_ips']:.1f} "
          f"images/s: {rates['speedup']:.1f}x; largest |difference| {rates['max_abs_diff']:.1e}")
    pred, ig = results["predictions"], results["metadata_ig"]
    emit({"bench": "score", "model": args.model, "images": args.images, "batch_size": args.batch_size,
          "device": "gpu" if gpus else "cpu", "features": rates["features"], "threads": rates["threads"],
          "metadata_ig_captum_ips": round(rates["captum_ips"], 1),
          "metadata_ig_ips": round(rates["vectorised_ips"], 1),
          "metadata_ig_speedup": round(rates["speedup"], 1),
          "metadata_ig_max_abs_diff": float(f"{rates['max_abs_diff']:.3g}"),
          "predictions_actor_ips": round(pred["actor_ips"], 1), "metadata_ig_actor_ips": round(ig["actor_ips"], 1),
          "predictions_e2e_ips": round(pred["e2e_ips"], 1), "metadata_ig_e2e_ips": round(ig["e2e_ips"], 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="N (the memory check also scores 4N)")
    parser.add_argument("--size", type=int, default=224, help="model input size (the checkpoint's contract)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the synthetic PNGs")
    parser.add_argument("--model", default="small_cnn",
                        help="small_cnn (CPU) or densenet121 (GPU) ...; mlp: the metadata attributions")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, help="model actors, a fixed pool (default: one per GPU, else 1)")
    parser.add_argument("--actor-cpus", type=float, default=float(os.cpu_count() or 1),
                        help="CPUs (torch threads) per actor (default: all cores)")
    parser.add_argument("--address", help="Ray cluster to run on (default: a private local one)")
    parser.add_argument("--data", default="data/bench-score", help="where the PNGs are kept between runs")
    parser.add_argument("--memory-only", action="store_true", help="only the N vs 4N peak-memory runs")
    args = parser.parse_args()

    from thorax_ray.ray_setup import init_ray
    from thorax_ray.scoring import ScoreConfig
    from thorax_ray.scoring.score import score
    from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

    n = args.images
    data = f"{args.data}-{4 * n}"
    if not os.path.exists(os.path.join(data, "Data_Entry_2017.csv")):
        print(f"generating {4 * n} synthetic {args.source_size} px PNGs in {data} (kept for later runs)")
        write_synthetic_dataset(SyntheticConfig(out=data, images=4 * n, size=args.source_size, seed=11),
                                progress=False)
    import ray

    if args.address:
        init_ray(args.address)
    else:  # a private local Ray (never another process's cluster)
        # Idle workers are kept, so the warm-up starts every worker process once and the memory figures
        # compare the scoring runs' own growth, not how many worker processes each run happened to start.
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 num_cpus=max(int(args.actor_cpus) * (args.actors or 1) + 1, (os.cpu_count() or 1) + 2),
                 _system_config={"idle_worker_killing_time_threshold_ms": 3_600_000})
    ray.data.DataContext.get_current().enable_progress_bars = False
    gpus = ray.cluster_resources().get("GPU", 0)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "checkpoint")
        os.makedirs(checkpoint)
        metadata = not make_checkpoint(checkpoint, args.model, args.size).spec.uses_images

        def run(label: str, method: str, images: int):
            out = os.path.join(tmp, label)
            config = ScoreConfig(checkpoint=checkpoint, input=data, out=out, method=method, max_images=images,
                                 batch_size=args.batch_size, min_actors=args.actors or 1, max_actors=args.actors,
                                 actor_cpus=args.actor_cpus)
            with PeakMemory(scope="machine" if args.address else "tree") as memory:
                summary, wall = timed(lambda: score(config))
            assert summary.scored == images, summary.format()
            results[label] = {"method": method, "images": images, "wall_s": wall, "compute_s": summary.compute_s,
                              "model_s": summary.model_s,
                              "e2e_ips": summary.scored / wall, "actor_ips": summary.compute_images_per_s,
                              "bytes_per_image": parquet_bytes(out) / summary.scored, "peak_mb": memory.peak_mb}
            print(f"  {label}: {summary.scored} images in {wall:.1f} s", flush=True)

        if metadata:  # the metadata MLP: its attributions in this process, then its scoring runs
            rates = metadata_attribution_rates(checkpoint, data, n, args.batch_size, max(1, int(args.actor_cpus)))
            run("warm-up", "none", n)
            run("predictions", "none", n)
            run("metadata_ig", "metadata_ig", n)
            report_metadata(args, results, rates, gpus)
            return
        run("warm-up", "fast_cam", n)  # starts Ray's worker processes once
        if args.memory_only:
            run("fast_cam", "fast_cam", n)
        else:
            run("predictions", "none", n)
            run("fast_cam", "fast_cam", n)
            run("gradcam", "gradcam", n)
        run("fast_cam_4n", "fast_cam", 4 * n)
        # Repeat N and 4N and keep each one's lowest peak (worker start-up and allocator noise).
        run("fast_cam_n_2", "fast_cam", n)
        run("fast_cam_4n_2", "fast_cam", 4 * n)

    print_runs(args, results, gpus)
    fast, big = results["fast_cam"], results["fast_cam_4n"]
    peak_n = min(fast["peak_mb"], results["fast_cam_n_2"]["peak_mb"])
    peak_4n = min(big["peak_mb"], results["fast_cam_4n_2"]["peak_mb"])
    figures = {"bench": "score", "model": args.model, "size": args.size, "images": n, "batch_size": args.batch_size,
               "device": "gpu" if gpus else "cpu", "memory_scope": "machine" if args.address else "process tree (PSS)"}
    if not args.memory_only:
        pred, naive = results["predictions"], results["gradcam"]
        figures.update({
            "predictions_actor_ips": round(pred["actor_ips"], 1), "fast_cam_actor_ips": round(fast["actor_ips"], 1),
            "gradcam_actor_ips": round(naive["actor_ips"], 1),
            "predictions_e2e_ips": round(pred["e2e_ips"], 1), "fast_cam_e2e_ips": round(fast["e2e_ips"], 1),
            "gradcam_e2e_ips": round(naive["e2e_ips"], 1),
            "fast_maps_cost_vs_predictions": round(fast["compute_s"] / pred["compute_s"], 2),
            "fast_maps_model_cost_vs_predictions": round(fast["model_s"] / pred["model_s"], 2),
            "fast_vs_naive_speedup": round(naive["compute_s"] / fast["compute_s"], 1),
            "fast_vs_naive_speedup_model": round(naive["model_s"] / fast["model_s"], 1),
            "fast_vs_naive_speedup_e2e": round(naive["wall_s"] / fast["wall_s"], 1),
        })
    figures.update({
        "bytes_per_image": round(fast["bytes_per_image"], 0),
        "peak_mb_n": round(peak_n, 0), "peak_mb_4n": round(peak_4n, 0),
        "peak_memory_ratio_4n_n": round(peak_4n / max(peak_n, 1.0), 2),
    })
    emit(figures)

if __name__ == "__main__":
    main()
