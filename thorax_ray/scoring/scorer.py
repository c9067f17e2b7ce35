"""The per-batch work of a scoring run: reading/decoding images (CPU tasks) and the model actor
(`Scorer`, one per GPU or per CPU slot) that turns a batch into output rows: probabilities, compact
heatmaps of all 14 findings, boxes in original-image pixels (or metadata feature attributions), and the
calibrated probabilities beside the raw ones (the checkpoint's calibration; boxes are gated on the raw ones,
which the operating points were chosen on), and each image's `ood_score` (thorax_ray.monitoring.ood: the distance
of its penultimate features from the checkpoint's validation features; null without a validation reference),
taken from a forward pass over the un-augmented images that the run makes anyway (the one-forward maps' pass, or
the probabilities' pass, which then reuses its logits).

With test-time augmentation (`ScoreConfig.tta`, thorax_ray.models.tta) the probability columns, and so the
calibrated ones and the box gate, are the mean over the views; the maps and boxes still come from the
attribution method's own pass over the un-augmented images, unless `tta_heatmaps` (hflip): then the maps
are the mean of the un-augmented images' maps and the flipped images' maps flipped back."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from thorax_ray import storage
from thorax_ray.accel import FastPath
from thorax_ray.attribution import (HEATMAP_SCHEMA_METADATA, boxes_for_batch, encode_heatmaps, get_method,
                                    normalise_maps)
from thorax_ray.attribution.base import FEATURE_ATTRIBUTIONS, MAPS, ONE_FORWARD_METHODS, Attribution
from thorax_ray.attribution.geometry import Centres, bin_centres, pooled_centres
from thorax_ray.calibration import apply_calibration
from thorax_ray.checkpoint import load_payload_and_id
from thorax_ray.data.decode import HEADER_BYTES, PNG_HEADER_BYTES, DecodeError, image_size
from thorax_ray.data.pipeline import images_to_array
from thorax_ray.data.preprocess import PreprocessingContract, normalise_images
from thorax_ray.labels import FINDING_COLUMNS
from thorax_ray.models import build_model, receptive_field_centres
from thorax_ray.models.tta import check_tta, hflip_mean_centres, tta_probabilities
from thorax_ray.monitoring.features import penultimate_features
from thorax_ray.monitoring.reference import feature_model_of
from thorax_ray.node_check import require_cuda_if_ray_gave_a_gpu
from thorax_ray.progress import count
from thorax_ray.scoring.config import ScoreConfig, scorer_threads
from thorax_ray.scoring.output import CALIBRATED_COLUMNS, pipeline_schema, score_schema

log = logging.getLogger(__name__)

NO_METHOD = "none"  # probabilities only: no maps, no boxes


@dataclass(frozen=True)
class ScorerSettings:
    """Everything a `Scorer` actor needs, resolved on the driver. No defaults: `from_config` fills every
    field from the run's `ScoreConfig` (where the defaults are stated) and what the run resolved."""

    checkpoint_dir: str
    model_id: str  # the checkpoint's model.pt must still be this one when the actor loads it
    method: str  # attribution method, or NO_METHOD
    method_options: dict
    stored_size: int  # side of the images as they travel (prepared size, or the contract's for raw files)
    run_id: str
    batch_date: str
    max_map_side: int | None
    heatmap_bits: int
    tta: str  # thorax_ray.models.tta kind of the probabilities
    tta_heatmaps: bool  # maps = mean of the image's and its flip's (hflip)
    box_min_probability: tuple[float, ...] | None  # per finding (the resolved gate), None: every boxed finding
    box_threshold: float
    max_boxes: int
    box_grid: int | None
    endpoint_url: str | None
    threads: int  # torch threads of the actor

    @classmethod
    def from_config(cls, config: ScoreConfig, *, checkpoint_dir: str, model_id: str, method: str, stored_size: int,
                    run_id: str, batch_date: str, box_min_probability: tuple[float, ...] | None) -> "ScorerSettings":
        return cls(checkpoint_dir=checkpoint_dir, model_id=model_id, method=method,
                   method_options=dict(config.method_options), stored_size=int(stored_size), run_id=run_id,
                   batch_date=batch_date, max_map_side=config.max_map_side, heatmap_bits=config.heatmap_bits,
                   tta=config.tta, tta_heatmaps=config.tta_heatmaps, box_min_probability=box_min_probability,
                   box_threshold=config.box_threshold, max_boxes=config.max_boxes, box_grid=config.box_grid,
                   endpoint_url=config.endpoint_url, threads=scorer_threads(config))


def uses_maps(model: torch.nn.Module, method: str) -> bool:
    """Whether the run writes heatmaps and boxes: a method that makes maps, of a model that sees images."""
    return method != NO_METHOD and model.spec.uses_images and get_method(method).produces == MAPS


def uses_feature_attributions(method: str) -> bool:
    """Whether the run writes feature attributions (metadata_ig, for the metadata MLP and for fusion)."""
    return method != NO_METHOD and get_method(method).produces == FEATURE_ATTRIBUTIONS


def map_shape(model: torch.nn.Module, contract: PreprocessingContract,
              max_side: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h, w) of the model's feature map for the contract's image size, (h, w) as stored)."""
    size = contract.size
    with torch.no_grad():
        fmap = model.features(torch.zeros(1, contract.channels, size, size))
    h, w = int(fmap.shape[-2]), int(fmap.shape[-1])
    if max_side:
        return (h, w), (min(h, int(max_side)), min(w, int(max_side)))
    return (h, w), (h, w)


def map_centres(model: torch.nn.Module, contract: PreprocessingContract, method: str,
                max_side: int | None, *, hflip_mean: bool = False) -> Centres:
    """Where the stored maps' cells sit, as fractions of the image side: the receptive-field centres of the
    feature-map positions for the CAM family (pooled like the maps when they are pooled), bin centres for
    pixel methods (and models that do not say where their positions sit). `hflip_mean`: maps averaged with
    the flipped image's maps flipped back, whose columns sit at the midpoints (tta.hflip_mean_centres)."""
    (fh, fw), (h, w) = map_shape(model, contract, max_side)
    cnn = getattr(model, "backbone", model)
    if get_method(method).map_cells != "receptive_fields" or not hasattr(cnn, "map_stride"):
        return bin_centres(h), bin_centres(w)
    size = contract.size
    rows, cols = receptive_field_centres(model, fh, size), receptive_field_centres(model, fw, size)
    rows, cols = (pooled_centres(rows, h) if h != fh else rows), (pooled_centres(cols, w) if w != fw else cols)
    return rows, (hflip_mean_centres(cols) if hflip_mean else cols)


def heatmap_description(model: torch.nn.Module, contract: PreprocessingContract, method: str,
                        max_side: int | None, *, heatmap_bits: int, tta_heatmaps: bool) -> dict:
    """HEATMAP_SCHEMA_METADATA of the stored maps (in "planar<heatmap_bits>"), plus where they come from."""
    (fh, fw), (h, w) = map_shape(model, contract, max_side)
    centres = map_centres(model, contract, method, max_side, hflip_mean=tta_heatmaps)
    description = HEATMAP_SCHEMA_METADATA(h, w, method, centres, encoding=f"planar{heatmap_bits}")
    description.update({
        "scored_image_size": contract.size,
        "feature_map": [fh, fw],
        "pooling": ("none" if (fh, fw) == (h, w)
                    else f"adaptive average pooling of the {fh}x{fw} maps to {h}x{w} before normalisation"),
        "views": ("mean of the raw maps of the un-augmented image and of its horizontal flip (flipped back), "
                  "before pooling and normalisation; column centres at the midpoints of the two views' "
                  "(thorax_ray.models.tta.hflip_mean_centres)" if tta_heatmaps
                  else "the un-augmented image (the attribution method's own pass), whatever the probabilities' "
                       "test-time augmentation"),
    })
    return description


def _logits_by_view(**logits: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Logits an attribution pass gave, detached, by TTA view name (methods without logits give none)."""
    return {view: value.detach() for view, value in logits.items() if value is not None}


# ----- reading and decoding (CPU tasks) --------------------------------------------------------------


_WANTED_CACHE: dict[str, frozenset] = {}


def prepared_batch(table: pa.Table, wanted_ref, endpoint_url: str | None) -> pa.Table:
    """Rows of prepared shards: keeps the wanted images and adds width/height of their source image (a
    ranged read of its header: 24 bytes for a PNG, more for JPEG and DICOM) and ok/stage/reason. When the
    source cannot be read its size is unknown (null): the row is scored (probabilities, heatmap) but gets
    no boxes, and the run counts it."""
    import ray  # deferred: Ray (absent on the GPU machine)

    key = wanted_ref.hex()
    if key not in _WANTED_CACHE:
        _WANTED_CACHE.clear()
        _WANTED_CACHE[key] = ray.get(wanted_ref)
    wanted = _WANTED_CACHE[key]
    mask = np.fromiter((name in wanted for name in table.column("image_index").to_pylist()), bool, table.num_rows)
    table = table.filter(pa.array(mask))

    def size_of(uri: str | None) -> tuple[int | None, int | None]:
        if uri:
            try:
                fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
                try:  # a PNG says its size in its first 24 bytes; JPEG and DICOM need more
                    return image_size(fs.cat_file(path, start=0, end=PNG_HEADER_BYTES))
                except DecodeError:
                    return image_size(fs.cat_file(path, start=0, end=HEADER_BYTES))
            except Exception:  # noqa: BLE001 - source moved/deleted: the original frame is unknown (counted)
                pass
        return None, None

    with ThreadPoolExecutor(max_workers=8) as pool:
        sizes = list(pool.map(size_of, table.column("path").to_pylist()))
    n = table.num_rows
    return (table.append_column("width", pa.array([s[0] for s in sizes], pa.int32()))
            .append_column("height", pa.array([s[1] for s in sizes], pa.int32()))
            .append_column("metadata_source", pa.array(["csv"] * n, pa.string()))  # prepared from a manifest
            .append_column("ok", pa.array(np.ones(n, bool)))
            .append_column("stage", pa.array([""] * n, pa.string()))
            .append_column("reason", pa.array([""] * n, pa.string())))


# ----- the model actor ------------------------------------------------------------------------------


class Scorer:
    """Ray Data actor: loads the checkpoint once, then scores pyarrow batches.

    Input columns: image_index, path, metadata_source, image (raw uint8 `stored_size`^2 bytes; image
    models), width, height, the model's metadata columns (metadata models), ok/stage/reason (failed rows are passed
    through with null outputs). Output: `pipeline_schema(score_schema(...))`; `_compute_s` = the
    batch's wall time in this actor and `_model_s` = its model/attribution part, spread over its rows.
    """

    def __init__(self, settings: ScorerSettings, progress=None):
        torch.set_num_threads(settings.threads)
        payload, found = load_payload_and_id(settings.checkpoint_dir, endpoint_url=settings.endpoint_url)
        if found != settings.model_id:
            raise RuntimeError(f"{settings.checkpoint_dir}: model.pt changed during the run "
                               f"(model_id {found} != {settings.model_id})")
        self.settings = settings
        require_cuda_if_ray_gave_a_gpu()  # a GPU actor never falls back to the CPU: one line naming the node
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build_model(payload).to(self.device)
        self.contract = PreprocessingContract.from_dict(payload.preprocessing)
        self.calibration = payload.calibration  # None: the calibrated columns repeat the raw probabilities
        self.feature_model = feature_model_of(payload.validation_reference)  # None: ood_score stays null
        self.spec = self.model.spec
        check_tta(settings.tta, self.spec)
        # GPU: bf16 autocast (predictions and cam/fast_cam), channels_last, pinned non-blocking copies; CPU: off.
        self.fast = FastPath.for_device(self.device, compile=False, images=self.spec.uses_images)
        self.fast.setup()
        self.features = self.model.metadata_features if self.spec.uses_metadata else None
        method, max_map_side = settings.method, settings.max_map_side
        self.method = None if method == NO_METHOD else get_method(method)(self.model, **settings.method_options)
        self.maps = uses_maps(self.model, method)
        self.attributions = uses_feature_attributions(method)
        self.map_size = map_shape(self.model.cpu(), self.contract, max_map_side)[1] if self.maps else None
        self.centres = (map_centres(self.model, self.contract, method, max_map_side, hflip_mean=settings.tta_heatmaps)
                        if self.maps else None)
        self.encoding = f"planar{settings.heatmap_bits}"
        self.model = self.fast.prepare_model(self.model)
        self.schema = pipeline_schema(score_schema(maps=self.maps, feature_attributions=self.attributions))
        self.box_options = {"min_probability": settings.box_min_probability, "threshold": settings.box_threshold,
                            "max_boxes": settings.max_boxes}
        self.progress = progress  # the run's thorax_ray.progress counter (None: not counted)

    def _inputs(self, good: pa.Table) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        images = features = None
        if self.spec.uses_images:
            pixels = images_to_array(good.column("image"), self.settings.stored_size)
            host = self.fast.pin(torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1))
            images = self.fast.images_layout(normalise_images(host, self.contract, device=self.device))
        if self.features is not None:
            frame = good.select(list(self.features.columns)).to_pandas()
            features = self.fast.to_device(torch.from_numpy(self.features.encode(frame)))
        return images, features

    def _attribution(self, images: torch.Tensor | None, features: torch.Tensor | None
                     ) -> tuple[Attribution | None, dict[str, torch.Tensor], torch.Tensor | None]:
        """The method's attribution of the un-augmented images (with `tta_heatmaps` its maps are the mean of
        theirs and of the flipped images' maps flipped back; raw maps, float32), the logits its passes
        gave, by TTA view name ("image", "hflip"), so that those views are not run again, and, for the
        one-forward methods when the run monitors, the penultimate features of the un-augmented images' pass
        (else None)."""
        if self.method is None:
            return None, {}, None
        one_forward = self.settings.method in ONE_FORWARD_METHODS
        # bf16 for the one-forward maps; Captum's gradient/perturbation methods stay in fp32.
        with self.fast.autocast() if one_forward else contextlib.nullcontext():
            with (penultimate_features(self.model) if one_forward and self.feature_model is not None
                  else contextlib.nullcontext()) as captured:
                attribution = self.method.attribute(images, features)
            pooled = captured.tensor() if captured is not None else None
            pooled = pooled if pooled is not None and len(pooled) == len(attribution.logits) else None
            if not self.settings.tta_heatmaps:
                return attribution, _logits_by_view(image=attribution.logits), pooled
            flipped = self.method.attribute(images.flip(-1), features)
        maps = (attribution.maps.detach().float() + flipped.maps.detach().float().flip(-1)) / 2
        return (dataclasses.replace(attribution, maps=maps),
                _logits_by_view(image=attribution.logits, hflip=flipped.logits), pooled)

    def _ood_scores(self, images: torch.Tensor | None, features: torch.Tensor | None,
                    known: dict[str, torch.Tensor], pooled: torch.Tensor | None) -> np.ndarray | None:
        """Each image's ood_score (None without a feature model), from `pooled` when the attribution pass
        captured it, else from a forward pass over the un-augmented images whose logits go into `known`
        ("image"), so the probabilities reuse them."""
        if self.feature_model is None:
            return None
        if pooled is None:
            with torch.no_grad(), self.fast.autocast(), penultimate_features(self.model) as captured:
                known["image"] = self.model(*self.spec.model_inputs(images, features)).detach()
            pooled = captured.tensor()
        return self.feature_model.distances(pooled).astype(np.float32)

    def _probabilities(self, images: torch.Tensor | None, features: torch.Tensor | None,
                       known: dict[str, torch.Tensor]) -> np.ndarray:
        """The probability columns: the mean over the TTA views ("none": the one view), a forward for each
        view whose logits the attribution passes did not already give."""
        with torch.no_grad(), self.fast.autocast():
            return tta_probabilities(self.model, images, features, kind=self.settings.tta, known=known).cpu().numpy()

    def _score(self, good: pa.Table) -> tuple[dict[str, list | np.ndarray], float]:
        started = time.perf_counter()
        images, features = self._inputs(good)
        out: dict[str, list | np.ndarray] = {}
        attribution, known, pooled = self._attribution(images, features)
        ood_scores = self._ood_scores(images, features, known, pooled)
        probabilities = self._probabilities(images, features, known)
        model_s = time.perf_counter() - started
        calibrated = apply_calibration(self.calibration, probabilities)
        for i, (column, calibrated_column) in enumerate(zip(FINDING_COLUMNS, CALIBRATED_COLUMNS)):
            out[column], out[calibrated_column] = probabilities[:, i], calibrated[:, i]
        if ood_scores is not None:
            out["ood_score"] = ood_scores
        if self.maps:
            maps = attribution.maps.detach().float()
            if tuple(maps.shape[-2:]) != self.map_size:
                maps = F.adaptive_avg_pool2d(maps, self.map_size)
            maps_uint8 = normalise_maps(maps)
            out["heatmap"] = encode_heatmaps(maps_uint8, self.encoding)
            out["boxes"] = self._boxes(maps_uint8, probabilities, good.column("width").to_pylist(),
                                       good.column("height").to_pylist())
        if self.attributions:
            values = attribution.feature_attributions.detach().float().cpu().numpy().astype("<f4")
            out["feature_attributions"] = [np.ascontiguousarray(v).tobytes() for v in values]
        return out, model_s

    def _boxes(self, maps_uint8: np.ndarray, probabilities: np.ndarray, widths: list[int | None],
               heights: list[int | None]) -> list[list[dict] | None]:
        """`boxes_for_batch` in original-image pixels, traced on a grid of at most `box_grid` pixels per
        side (the same bilinear upsampling, at lower resolution) and scaled: a 1024 px image costs as
        much as a 128 px one, for a precision of 8 px (an 8x8 map cell spans 128 px). Rows whose original
        size is unknown (None) get None: no boxes, rather than boxes in a frame they are not in."""
        known = [i for i, (w, h) in enumerate(zip(widths, heights)) if w and h]
        out: list[list[dict] | None] = [None] * len(widths)
        if not known:
            return out
        maps_uint8, probabilities = maps_uint8[known], probabilities[known]
        widths, heights = [widths[i] for i in known], [heights[i] for i in known]
        grid_w, grid_h = [], []
        for width, height in zip(widths, heights):
            scale = min(1.0, self.settings.box_grid / max(width, height)) if self.settings.box_grid else 1.0
            grid_w.append(max(1, round(width * scale)))
            grid_h.append(max(1, round(height * scale)))
        boxes = boxes_for_batch(maps_uint8, grid_w, grid_h, probabilities=probabilities, centres=self.centres,
                                **self.box_options)
        for image, width, height, gw, gh in zip(boxes, widths, heights, grid_w, grid_h):
            if (gw, gh) != (width, height):
                sx, sy = width / gw, height / gh
                for box in image:
                    box.update(x=box["x"] * sx, y=box["y"] * sy, w=box["w"] * sx, h=box["h"] * sy)
        for i, image in zip(known, boxes):
            out[i] = image
        return out

    def __call__(self, table: pa.Table) -> pa.Table:
        started = time.perf_counter()
        n = table.num_rows
        names = table.column_names
        ok = (table.column("ok").to_numpy(zero_copy_only=False).astype(bool) if "ok" in names
              else np.ones(n, bool))
        good, bad = table.filter(pa.array(ok)), table.filter(pa.array(~ok))
        now = dt.datetime.now(dt.timezone.utc)
        parts, model_s = [], 0.0
        if good.num_rows:
            values, model_s = self._score(good)
            parts.append(self._table(good, values, now, ok=True))
        if bad.num_rows:
            parts.append(self._table(bad, {}, now, ok=False))
        result = pa.concat_tables(parts) if parts else self.schema.empty_table()
        count(self.progress, n)
        elapsed = time.perf_counter() - started
        share = max(1, result.num_rows)
        result = result.set_column(result.schema.get_field_index("_compute_s"), "_compute_s",
                                   pa.array(np.full(result.num_rows, elapsed / share)))
        return result.set_column(result.schema.get_field_index("_model_s"), "_model_s",
                                 pa.array(np.full(result.num_rows, model_s / share)))

    def _table(self, rows: pa.Table, values: dict, now: dt.datetime, *, ok: bool) -> pa.Table:
        n = rows.num_rows
        names = rows.column_names
        columns = {}
        for field in self.schema:
            name = field.name
            if name in values:
                columns[name] = pa.array(values[name], type=field.type)
            elif name in ("image_index", "path", "metadata_source") and name in names:
                columns[name] = rows.column(name).cast(field.type)
            elif name in ("width", "height") and name in names and ok:
                columns[name] = rows.column(name).cast(field.type)
            elif name == "model_id":
                columns[name] = pa.array([self.settings.model_id] * n, field.type)
            elif name == "run_id":
                columns[name] = pa.array([self.settings.run_id] * n, field.type)
            elif name == "batch_date":
                columns[name] = pa.array([self.settings.batch_date] * n, field.type)
            elif name == "scored_at":
                columns[name] = pa.array([now] * n, field.type)
            elif name == "ok":
                columns[name] = pa.array([ok] * n, field.type)
            elif name in ("stage", "reason"):
                columns[name] = (rows.column(name).cast(field.type) if name in names
                                 else pa.array([""] * n, field.type))
            else:
                columns[name] = pa.nulls(n, field.type)
        return pa.table(columns, schema=self.schema)
