"""Contact sheet of rendered images."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from thorax_ray.synthetic.preview import DPI, TILE_INCHES, write_contact_sheet
from thorax_ray.synthetic.render import ALL_FINDINGS, Patient, render_chest_xray


def _rendered(count: int, size: int = 64):
    images, titles, boxes = [], [], []
    for i in range(count):
        findings = [ALL_FINDINGS[i % len(ALL_FINDINGS)]] if i else []
        patient = Patient("MF"[i % 2], 40.0, "PA")
        image, image_boxes = render_chest_xray(findings, patient, size, np.random.default_rng(i))
        images.append(image)
        boxes.append(image_boxes)
        titles.append(f"{i:08d}_000.png PA\n{', '.join(findings) or 'No Finding'}")
    return images, titles, boxes


def test_contact_sheet_is_a_4x4_grid_png(tmp_path):
    images, titles, boxes = _rendered(16)
    path = tmp_path / "sheet" / "preview.png"
    write_contact_sheet(images, titles, boxes, path)
    with Image.open(path) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == (round(4 * TILE_INCHES * DPI), round(4 * (TILE_INCHES + 0.35) * DPI))
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    assert pixels.std() > 30  # images, not a blank page
    coloured = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    assert (coloured > 60).sum() > 100  # the coloured box outlines and labels are there


def test_partial_last_row(tmp_path):
    images, titles, boxes = _rendered(5)
    path = tmp_path / "five.png"
    write_contact_sheet(images, titles, boxes, str(path), columns=4)
    with Image.open(path) as sheet:
        assert sheet.size == (round(4 * TILE_INCHES * DPI), round(2 * (TILE_INCHES + 0.35) * DPI))


def test_mismatched_lengths_raise(tmp_path):
    images, titles, boxes = _rendered(2)
    with pytest.raises(ValueError):
        write_contact_sheet(images, titles[:1], boxes, tmp_path / "x.png")
    with pytest.raises(ValueError):
        write_contact_sheet([], [], [], tmp_path / "x.png")


def test_import_does_not_load_matplotlib():
    code = "import sys, thorax_ray.synthetic.preview, thorax_ray.synthetic.render; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
