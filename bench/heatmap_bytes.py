"""Stored heatmap bytes per image: 32x32 maps of the 14 findings in a zstd Parquet column (as the scoring
job writes them), encoded as raw uint8 (the baseline, measured in the same run), planar5 (the job's
default: 32 levels) and planar8 (`--heatmap-bits 8`: lossless). Nothing is trained; the maps are raw CAM
(`cam`, Wang et al.'s maps) of synthetic chest X-rays from:

  (a) a small_cnn with output_stride 8 at 256 px: the demo's trained checkpoint (--demo-run, at 256 px
      whatever size it was trained at) when it exists, else an untrained one (the output says which);
  (b) an untrained DenseNet-121 (random init, nothing downloaded) at 1024 px, a few images (CPU: seconds each).

    python bench/heatmap_bytes.py [--small-images 32] [--densenet-images 4] [--densenet-size 1024]

"column" bytes are the heatmap column chunk as stored (zstd pages and their headers), the figure that grows
with the images; "file" bytes add the Parquet footer and schema, which a file of few rows is dominated by.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402

ENCODINGS = ("uint8", "planar5", "planar8")  # the first is the baseline of the ratios


def synthetic_images(count: int, size: int, seed: int):
    """uint8 (count, size, size) synthetic chest X-rays, two findings drawn on each."""
    import numpy as np

    from thorax_ray.labels import FINDINGS
    from thorax_ray.synthetic.render import Patient, render_chest_xray

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        findings = [FINDINGS[(2 * i) % len(FINDINGS)], FINDINGS[(2 * i + 5) % len(FINDINGS)]]
        patient = Patient(sex="MF"[i % 2], age_years=float(rng.integers(20, 80)), view_position="PA")
        images.append(render_chest_xray(findings, patient, size, np.random.default_rng([seed, i]))[0])
    return np.stack(images)


def cam_maps(model, pixels, size: int, batch: int = 4):
    """uint8 maps (N, 14, h, w): raw CAM of the images at `size` px, min-max normalised as scoring stores them."""
    import numpy as np
    import torch

    from thorax_ray.attribution import get_method, normalise_maps
    from thorax_ray.data.preprocess import normalise_images, preprocessing_contract

    method, contract = get_method("cam")(model), preprocessing_contract(size)
    out = []
    for start in range(0, len(pixels), batch):
        host = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch])).unsqueeze(1)
        with torch.no_grad():
            maps = method.attribute(normalise_images(host, contract, device=torch.device("cpu"))).maps
        out.append(normalise_maps(maps))
    return np.concatenate(out)


def stored_bytes(maps, encoding: str) -> dict:
    """Bytes per image of the maps in `encoding`, one heatmap column written with zstd as the job writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thorax_ray.attribution import encode_heatmaps

    table = pa.table({"heatmap": pa.array(encode_heatmaps(maps, encoding), pa.binary())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    metadata = pq.ParquetFile(io.BytesIO(buffer.getvalue())).metadata
    column = sum(metadata.row_group(i).column(0).total_compressed_size for i in range(metadata.num_row_groups))
    n = len(maps)
    return {"column_bytes_per_image": column / n, "file_bytes_per_image": buffer.tell() / n}


def small_cnn(demo_run: str, size: int):
    """(model, what it is): the demo's trained small_cnn when its run exists, else an untrained one."""
    import torch

    from thorax_ray.checkpoint import load_payload, resolve_checkpoint
    from thorax_ray.models import build_model, create_model

    if os.path.exists(demo_run):
        checkpoint = resolve_checkpoint(demo_run)
        payload = load_payload(checkpoint)
        trained = payload.preprocessing["size"]
        return build_model(payload), (f"trained demo checkpoint {checkpoint} (trained at {trained} px, "
                                      f"epoch {payload.epoch}), used at {size} px")
    torch.manual_seed(0)
    return create_model("small_cnn", output_stride=8).eval(), f"untrained small_cnn (no {demo_run}), at {size} px"


def measure(name: str, what: str, model, pixels, size: int) -> dict:
    started = time.perf_counter()
    maps = cam_maps(model, pixels, size)
    seconds = time.perf_counter() - started
    sizes = {encoding: stored_bytes(maps, encoding) for encoding in ENCODINGS}
    base = sizes[ENCODINGS[0]]["column_bytes_per_image"]
    print(f"{name}: {what}; {len(maps)} images, maps {maps.shape[1]}x{maps.shape[2]}x{maps.shape[3]} "
          f"(raw CAM, {seconds / len(maps):.2f} s/image)")
    for encoding, figures in sizes.items():
        print(f"  {encoding:<8} {figures['column_bytes_per_image']:8.0f} bytes/image in the column "
              f"({figures['column_bytes_per_image'] / base:.2f}x {ENCODINGS[0]}), "
              f"{figures['file_bytes_per_image']:8.0f} with the file's footer")
    return {"model": what, "images": len(maps), "map_shape": list(maps.shape[1:]),
            **{f"{encoding}_bytes_per_image": round(figures["column_bytes_per_image"], 1)
               for encoding, figures in sizes.items()},
            **{f"ratio_{encoding}": round(figures["column_bytes_per_image"] / base, 3)
               for encoding, figures in sizes.items() if encoding != ENCODINGS[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-run", default="out/demo/runs/demo-small_cnn", help="the demo's small_cnn run")
    parser.add_argument("--small-size", type=int, default=256, help="small_cnn input (32x32 maps at 256 px)")
    parser.add_argument("--small-images", type=int, default=32)
    parser.add_argument("--densenet-size", type=int, default=1024, help="DenseNet-121 input (32x32 maps at 1024)")
    parser.add_argument("--densenet-images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    args = parser.parse_args()

    import torch

    from thorax_ray.models import create_model

    torch.set_num_threads(args.threads)
    model, what = small_cnn(args.demo_run, args.small_size)
    small = measure("small_cnn", what, model, synthetic_images(args.small_images, args.small_size, seed=1),
                    args.small_size)
    torch.manual_seed(0)
    densenet = create_model("densenet121").eval()  # random init: no weights are downloaded
    dense = measure("densenet121", f"untrained densenet121 (random init) at {args.densenet_size} px", densenet,
                    synthetic_images(args.densenet_images, args.densenet_size, seed=2), args.densenet_size)
    emit({"bench": "heatmap_bytes", "baseline": ENCODINGS[0], "small_cnn": small, "densenet121": dense})


if __name__ == "__main__":
    main()
