"""A real localization check: a small CNN trained (plain PyTorch, in process) on synthetic radiographs
whose findings are clearly drawn, then scored by the job with 16x16 maps; its stored ReLU'd maps put their
mass inside the ground-truth boxes of the findings present far more than chance (the boxes' share of the
image), Wang et al. 2017's protocol on its raw CAM beats a whole-image box, and the output stays within
2 KB per image."""
import numpy as np
import torch
import torch.nn.functional as F

from tests.helpers import make_checkpoint
from thorax_ray.attribution import centres_from_metadata, decode_heatmaps, upsample_maps
from thorax_ray.data.decode import decode_image
from thorax_ray.data.manifest import build_manifest
from thorax_ray.data.nih_csv import read_bbox_list
from thorax_ray.data.preprocess import preprocessing_contract
from thorax_ray.labels import FINDING_COLUMNS, FINDINGS
from thorax_ray.models import create_model
from thorax_ray.scoring import ScoreConfig, read_scores
from thorax_ray.scoring.score import score
from thorax_ray.synthetic.dataset import SyntheticConfig, write_synthetic_dataset

SIZE = 96  # written and scored at 96 px; small_cnn with 3 blocks at output stride 4 -> 24x24, stored pooled to 16x16
LARGE = ("Cardiomegaly", "Effusion", "Pneumothorax", "Mass")
CONTRACT = preprocessing_contract(SIZE)


def train_small_cnn(images: np.ndarray, labels: np.ndarray, *, epochs: int = 10, seed: int = 0):
    """BCE on the four large boxed findings (others masked out), positives up-weighted (at most 10x)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = create_model("small_cnn", widths=(16, 32, 64), output_stride=4)
    x = ((torch.from_numpy(images).float().unsqueeze(1) / 255.0) - CONTRACT.mean) / CONTRACT.std
    y = torch.from_numpy(labels.astype(np.float32))
    mask = torch.zeros(len(FINDINGS))
    mask[[FINDINGS.index(f) for f in LARGE]] = 1.0
    prevalence = y.mean(0).clamp(min=1e-3)
    pos_weight = ((1 - prevalence) / prevalence).clamp(1, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for batch in np.array_split(rng.permutation(len(x)), max(1, len(x) // 32)):
            loss = (F.binary_cross_entropy_with_logits(model(x[batch]), y[batch], pos_weight=pos_weight,
                                                       reduction="none") * mask).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def test_heatmaps_concentrate_inside_truth_boxes(ray_local, tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(SyntheticConfig(out=str(data), images=1500, size=SIZE, seed=5, difficulty=0.3,
                                            workers=2), progress=False)
    manifest, _ = build_manifest(str(data))
    train = manifest[manifest["split"] != "test"]
    pixels = np.stack([decode_image(open(p, "rb").read(), SIZE).pixels for p in train["path"]])
    model = train_small_cnn(pixels, train[list(FINDING_COLUMNS)].to_numpy())
    make_checkpoint(tmp_path / "ckpt", "small_cnn", size=SIZE, model=model)

    test = manifest[manifest["split"] == "test"]
    test.to_parquet(tmp_path / "test.parquet")  # a manifest Parquet as the job's input
    summary = score(ScoreConfig(checkpoint=str(tmp_path / "ckpt"), input=str(tmp_path / "test.parquet"),
                                out=str(tmp_path / "out"), batch_size=64, method="fast_cam"))
    assert summary.scored == len(test)
    assert summary.bytes_per_image <= 2048, f"{summary.bytes_per_image:.0f} bytes per image with 16x16 maps"
    frame = read_scores(str(tmp_path / "out")).set_index("image_index")
    shape = frame.attrs["heatmap"]["shape"]
    assert shape == [14, 16, 16]
    centres = centres_from_metadata(frame.attrs["heatmap"])

    boxes = read_bbox_list(str(data / "BBox_List_2017.csv"))
    boxes = boxes[boxes["finding"].isin(LARGE) & boxes["image_index"].isin(frame.index)]
    assert len(boxes) >= 60
    inside, area, empty = [], [], 0
    for box in boxes.itertuples():
        row = frame.loc[box.image_index]
        heat = decode_heatmaps([row["heatmap"]], shape)[0, FINDINGS.index(box.finding)]
        up = upsample_maps(heat[None], int(row["width"]), int(row["height"]), centres)[0]
        if up.sum() == 0:  # no positive evidence for the finding anywhere
            empty += 1
            continue
        in_box = np.zeros(up.shape, bool)
        in_box[int(box.y):int(np.ceil(box.y + box.h)), int(box.x):int(np.ceil(box.x + box.w))] = True
        inside.append(up[in_box].sum() / up.sum())
        area.append(in_box.mean())
    assert empty <= len(boxes) // 4
    mass, chance = float(np.mean(inside)), float(np.mean(area))
    assert mass > 2 * chance, f"mean heatmap mass in box {mass:.3f} vs box area fraction {chance:.3f}"
    # The model did learn the finding (probabilities of labelled images well above the others).
    effusion = frame.loc[test["image_index"], "effusion"].to_numpy()
    labelled = test["effusion"].to_numpy() == 1
    assert effusion[labelled].mean() > effusion[~labelled].mean() + 0.2

    # Wang et al. 2017's protocol on the default heatmaps (ReLU'd CAM; thresholds 60 and 180, every region) beats a box
    # over the whole image at T(IoBB) = 0.25 for the four large findings.
    from thorax_ray.evaluation.evaluate import heatmap_boxes
    from thorax_ray.evaluation.localization import chance_localization, localization_accuracy, mean_accuracy

    raw = score(ScoreConfig(checkpoint=str(tmp_path / "ckpt"), input=str(tmp_path / "test.parquet"),
                            out=str(tmp_path / "raw"), batch_size=64))
    assert raw.method == "fast_cam" and raw.bytes_per_image <= 2048
    scored = read_scores(str(tmp_path / "raw")).set_index("image_index")
    predicted, unknown = heatmap_boxes(scored, boxes, scored.attrs["heatmap"])
    assert unknown == 0
    ours = mean_accuracy(localization_accuracy(predicted, boxes))["0.25"]
    whole = mean_accuracy(chance_localization(boxes, SIZE, SIZE)["whole_image"])["0.25"]
    assert ours > whole + 0.1, (ours, whole)
