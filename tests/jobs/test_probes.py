"""Every job run as a user runs it (a real subprocess) with each class of bad input of issue 15: it must
exit non-zero with exactly one line on stderr that names the input, write nothing, and (for the fast
probes, all but those marked slow) fail before Ray starts. Each probe says which defect class it covers.

Classes: 1 evaluate succeeding on wrong --scores; 2 names that become paths; 4 synthetic generation;
5 tracebacks instead of one line; 6 errors only after Ray started; 7 silent edge cases."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from tests.data.test_locate import make_layout
from tests.helpers import make_checkpoint, write_text
from thorax_ray.data.nih_csv import DATA_ENTRY_HEADER

pytestmark = pytest.mark.slow  # each probe runs a job in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+INFO ")  # Ray's own "Connecting to ..."


def probe(job: str, *args: str, names: tuple[str, ...], absent: tuple = (), after_ray: bool = False,
          timeout: int = 120) -> str:
    """Runs `jobs/JOB.py ARGS`; asserts a non-zero exit, one line on stderr containing every one of
    `names`, no traceback, and that no path of `absent` exists afterwards. Returns the line.
    `after_ray`: the job fails after joining Ray, whose INFO lines about connecting are not counted."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, f"jobs/{job}.py", *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout, env=env)  # the session's token, for jobs joining its Ray
    lines = [line for line in result.stderr.strip().splitlines() if not (after_ray and RAY_LOG_LINE.match(line))]
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    assert all(str(name) in lines[0] for name in names), (names, lines[0])
    for path in absent:
        assert not os.path.exists(path), f"{path} was written"
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A four-image dataset in the full NIH layout (placeholder PNGs: nothing here decodes them)."""
    root = tmp_path_factory.mktemp("probe_data")
    make_layout(root, "full")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe_ckpt") / "ckpt"
    make_checkpoint(folder, "small_cnn", size=32)
    return folder


# ----- 1: evaluate --scores that is wrong or empty -------------------------------------------------------

def test_1_scores_of_a_path_that_does_not_exist(dataset, tmp_path):
    probe("evaluate", "--scores", "m=/nonexistent", "--data", dataset, "--out", tmp_path / "eval",
          names=("--scores m=/nonexistent", "not found"), absent=(tmp_path / "eval",))


def test_1_scores_of_a_folder_without_committed_scores(dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    probe("evaluate", "--scores", f"m={tmp_path / 'empty'}", "--data", dataset, "--out", tmp_path / "eval",
          names=(f"--scores m={tmp_path / 'empty'}", "no committed scores"), absent=(tmp_path / "eval",))


def test_1_one_good_and_one_mistyped_scores_fails_on_the_mistyped(dataset, tmp_path):
    (tmp_path / "good").mkdir()
    probe("evaluate", "--scores", f"good={tmp_path / 'good'}", "--scores", f"bad={tmp_path / 'goood'}",
          "--data", dataset, "--out", tmp_path / "eval", names=("--scores bad=", "goood", "not found"),
          absent=(tmp_path / "eval",))


def test_1_a_name_with_equals_is_split_at_the_first(dataset, tmp_path):
    probe("evaluate", "--scores", f"a=b={tmp_path}", "--data", dataset, "--out", tmp_path / "eval",
          names=(f"--scores a=b={tmp_path}", "not found"), absent=(tmp_path / "eval",))


def test_1_beside_an_output_that_is_not_an_evaluation(dataset, tmp_path):
    (tmp_path / "good").mkdir()
    probe("evaluate", "--scores", f"good={tmp_path / 'good'}", "--beside", tmp_path / "nowhere", "--data", dataset,
          "--out", tmp_path / "eval", names=("--beside", "nowhere", "not found"), absent=(tmp_path / "eval",))


# ----- 2: names that become paths ----------------------------------------------------------------------

def test_2_evaluate_model_name_outside_out(dataset, tmp_path):
    probe("evaluate", "--scores", f"../../x={tmp_path}", "--data", dataset, "--out", tmp_path / "eval",
          names=("model name '../../x'", "not a plain file name"), absent=(tmp_path / "eval",))


def test_2_train_run_name_outside_storage(dataset, tmp_path):
    probe("train", "--data", dataset, "--name", "../../escaped", "--storage", tmp_path / "runs",
          names=("run name '../../escaped'",), absent=(tmp_path / "runs", tmp_path.parent / "escaped"))


def test_2_tune_experiment_name_outside_storage(dataset, tmp_path):
    probe("tune", "--space", "tune_spaces/smoke.yaml", "--data", dataset, "--name", "/tmp/x",
          "--storage", tmp_path / "tune", "--out", tmp_path / "out",
          names=("--name", "experiment name '/tmp/x'"), absent=(tmp_path / "tune", tmp_path / "out"))


def test_2_image_name_outside_the_dataset_in_a_csv(tmp_path):
    make_layout(tmp_path / "d", "flat")
    csv = tmp_path / "d" / "Data_Entry_2017.csv"
    csv.write_text(csv.read_text().replace("00000002_000.png", "../../../x.png", 1))
    probe("manifest", "--data", tmp_path / "d", "--out", tmp_path / "m.parquet",
          names=(str(csv), "row 4", "'../../../x.png'"), absent=(tmp_path / "m.parquet",))


@pytest.mark.slow
def test_2_image_name_outside_the_overlay_folder_in_a_manifest(ray_local, tmp_path, checkpoint):
    """Before: an image_index of ../../../x.png wrote its overlay outside --overlays. Fails in score(),
    after Ray started (the input is listed once, there), so it joins the session's Ray."""
    make_layout(tmp_path / "d", "flat")
    pd.DataFrame({"image_index": ["a.png", "../../../x.png"], "path": [str(tmp_path / "d" / "a.png")] * 2}
                 ).to_parquet(tmp_path / "list.parquet")
    probe("score", "--checkpoint", checkpoint, "--input", tmp_path / "list.parquet", "--out", tmp_path / "out",
          "--overlays", tmp_path / "overlays", "--address", ray_local.get_runtime_context().gcs_address,
          names=("list.parquet, row 2", "image name '../../../x.png'"), after_ray=True,
          absent=(tmp_path / "out", tmp_path / "overlays", tmp_path.parent.parent / "x.overlay.png"))


# ----- 4: synthetic generation -------------------------------------------------------------------------

def test_4_bad_difficulty_writes_nothing(tmp_path):
    probe("make_synthetic", "--out", tmp_path / "d", "--difficulty", "-5", names=("difficulty", "-5"),
          absent=(tmp_path / "d",))


def test_4_a_non_empty_out_that_is_not_this_dataset_is_left_alone(tmp_path):
    write_text(tmp_path / "d" / "mine.txt", "keep")
    probe("make_synthetic", "--out", tmp_path / "d", "--images", "4", "--size", "32",
          names=(str(tmp_path / "d"), "not a complete synthetic dataset"))
    assert os.listdir(tmp_path / "d") == ["mine.txt"] and sorted(os.listdir(tmp_path)) == ["d"]


# ----- 5: one line, not a traceback --------------------------------------------------------------------

def test_5_malformed_yaml_of_train(tmp_path):
    config = write_text(tmp_path / "c.yaml", "optim:\n  lr: [0.1\nmodel: x\n")
    probe("train", "--config", config, "--storage", tmp_path / "runs", names=(config, "line 3", "not valid YAML"),
          absent=(tmp_path / "runs",))


def test_5_malformed_yaml_of_tune(dataset, tmp_path):
    space = write_text(tmp_path / "s.yaml", "params:\n  optim.lr: {grid: [0.1, 0.2]\n")
    probe("tune", "--space", space, "--data", dataset, "--storage", tmp_path / "tune", "--out", tmp_path / "out",
          names=(space, "not valid YAML"), absent=(tmp_path / "tune", tmp_path / "out"))


@pytest.mark.parametrize("size", ["0", "-8"])
def test_5_prepare_with_a_bad_size(dataset, tmp_path, size):
    probe("prepare", "--data", dataset, "--out", tmp_path / "p", "--size", size, names=("image size", size),
          absent=(tmp_path / "p",))


def test_5_a_binary_csv_names_the_file(tmp_path):
    make_layout(tmp_path / "d", "flat")
    (tmp_path / "d" / "Data_Entry_2017.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff")
    probe("manifest", "--data", tmp_path / "d", "--out", tmp_path / "m.parquet",
          names=(str(tmp_path / "d" / "Data_Entry_2017.csv"), "not UTF-8 text"), absent=(tmp_path / "m.parquet",))


# ----- 6: a typo fails before Ray starts ----------------------------------------------------------------

def test_6_train_data_typo(tmp_path):
    probe("train", "--data", tmp_path / "dta", "--storage", tmp_path / "runs",
          names=("--data", str(tmp_path / "dta"), "not found"), absent=(tmp_path / "runs",))


def test_6_train_unknown_architecture_in_yaml(dataset, tmp_path):
    config = write_text(tmp_path / "c.yaml", "model: {name: densenet}\n")
    probe("train", "--config", config, "--data", dataset, "--storage", tmp_path / "runs",
          names=("config.model", "unknown architecture 'densenet'"), absent=(tmp_path / "runs",))


def test_6_prepare_data_typo(tmp_path):
    probe("prepare", "--data", tmp_path / "dta", "--out", tmp_path / "p", names=("--data", "not found"),
          absent=(tmp_path / "p",))


def test_6_score_checkpoint_typo(dataset, tmp_path):
    probe("score", "--checkpoint", tmp_path / "ckpt", "--input", dataset, "--out", tmp_path / "out",
          names=("--checkpoint", str(tmp_path / "ckpt"), "not found"), absent=(tmp_path / "out",))


def test_6_score_folder_that_is_not_a_checkpoint(dataset, tmp_path):
    probe("score", "--checkpoint", dataset, "--input", dataset, "--out", tmp_path / "out",
          names=(str(dataset), "neither a checkpoint folder"), absent=(tmp_path / "out",))


def test_6_score_input_typo(checkpoint, tmp_path):
    probe("score", "--checkpoint", checkpoint, "--input", tmp_path / "incoming", "--out", tmp_path / "out",
          names=("--input", "not found"), absent=(tmp_path / "out",))


def test_6_evaluate_checkpoint_typo(dataset, tmp_path):
    probe("evaluate", "--checkpoint", tmp_path / "ckpt", "--data", dataset, "--out", tmp_path / "eval",
          names=("--checkpoint", "not found"), absent=(tmp_path / "eval",))


def test_6_tune_data_typo(tmp_path):
    probe("tune", "--space", "tune_spaces/smoke.yaml", "--data", tmp_path / "dta", "--storage", tmp_path / "tune",
          "--out", tmp_path / "out", names=("--data", "not found"), absent=(tmp_path / "tune", tmp_path / "out"))


# ----- 7: silent edge cases ----------------------------------------------------------------------------

def test_7_a_csv_with_only_a_header(tmp_path):
    make_layout(tmp_path / "d", "flat")
    (tmp_path / "d" / "Data_Entry_2017.csv").write_text(DATA_ENTRY_HEADER + "\n")
    probe("manifest", "--data", tmp_path / "d", "--out", tmp_path / "m.parquet",
          names=("Data_Entry_2017.csv", "no data rows"), absent=(tmp_path / "m.parquet",))


def test_7_a_split_without_validation_patients(dataset, tmp_path):
    probe("manifest", "--data", dataset, "--out", tmp_path / "m.parquet", "--val-fraction", "0.01",
          names=("val split has no patients", "--val-fraction"), absent=(tmp_path / "m.parquet",))


@pytest.mark.slow
def test_7_prepare_of_a_split_without_validation_patients(ray_local, dataset, tmp_path):
    """The split is made in prepare(), after Ray started: joins the session's Ray."""
    probe("prepare", "--data", dataset, "--out", tmp_path / "p", "--val-fraction", "0.01",
          "--address", ray_local.get_runtime_context().gcs_address,
          names=("val split has no patients", "--val-fraction"), absent=(tmp_path / "p",), after_ray=True)


@pytest.mark.parametrize("job", ["train", "tune"])
def test_7_zero_workers(dataset, tmp_path, job):
    space = ("--space", "tune_spaces/smoke.yaml", "--out", tmp_path / "out") if job == "tune" else ()
    probe(job, *space, "--data", dataset, "--workers", "0", "--storage", tmp_path / "runs",
          names=("workers must be >= 1", "got 0"), absent=(tmp_path / "runs", tmp_path / "out"))
