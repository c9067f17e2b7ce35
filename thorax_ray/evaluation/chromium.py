"""Renders report.html in headless Chromium (Debian's `chromium` package) and checks the screenshot: the
page is not blank and its plots are visible. The report's own styling is grey, so saturated (coloured)
pixels come from the embedded plots; a broken or missing image leaves none.

    check = render_report("out/demo/evaluation/report.html", "out/demo/evaluation/report_screenshot.png")
    print(check.format())
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "THORAX_CHROMIUM"  # path of the browser binary, if it is not on PATH
SATURATION = 60  # max(r, g, b) - min(r, g, b) of a "coloured" pixel (the report's CSS stays below 10)
MIN_PLOT_PIXELS = 2000  # coloured pixels that show plots are drawn (one ROC panel alone has more)
MIN_INK_FRACTION = 0.01  # non-white share of a page that is not blank


class RenderError(RuntimeError):
    pass


@dataclass(frozen=True)
class RenderCheck:
    screenshot: str
    width: int
    height: int
    ink_fraction: float  # share of pixels that are not (near) white
    plot_pixels: int  # saturated pixels: drawn plots

    @property
    def blank(self) -> bool:
        return self.ink_fraction < MIN_INK_FRACTION

    @property
    def plots_visible(self) -> bool:
        return self.plot_pixels >= MIN_PLOT_PIXELS

    @property
    def ok(self) -> bool:
        return not self.blank and self.plots_visible

    def format(self) -> str:
        verdict = "ok" if self.ok else ("blank page" if self.blank else "plots not visible")
        return (f"report rendered in headless Chromium: {verdict} ({self.width}x{self.height} px, "
                f"{100 * self.ink_fraction:.1f}% ink, {self.plot_pixels} plot pixels); screenshot {self.screenshot}")


def find_chromium() -> str | None:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html_path: str, png_path: str, *, width: int = 1400, height: int = 12000,
               timeout_s: float = 120.0, browser: str | None = None) -> str:
    """Full-window screenshot of a local HTML file (tall window: the whole report fits)."""
    browser = browser or find_chromium()
    if browser is None:
        raise RenderError("headless Chromium not found: install Debian's `chromium` package "
                          f"(apt-get install chromium) or set {CHROMIUM_ENV}")
    url = pathlib.Path(html_path).resolve().as_uri()
    png_path = os.path.abspath(png_path)
    os.makedirs(os.path.dirname(png_path), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="thorax-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--hide-scrollbars", "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                   f"--window-size={width},{height}", f"--screenshot={png_path}", url]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            raise RenderError(f"Chromium did not finish rendering {html_path} in {timeout_s:.0f} s") from error
    if done.returncode != 0 or not os.path.exists(png_path):
        raise RenderError(f"Chromium failed on {html_path} (exit {done.returncode}): {done.stderr[-800:]}")
    return png_path


def check_screenshot(png_path: str) -> RenderCheck:
    with Image.open(png_path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    height, width, _ = pixels.shape
    ink = float(np.mean(pixels.min(axis=2) < 235))
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    return RenderCheck(screenshot=png_path, width=width, height=height, ink_fraction=ink,
                       plot_pixels=int(np.count_nonzero(saturation >= SATURATION)))


def render_report(html_path: str, png_path: str | None = None, **kwargs) -> RenderCheck:
    """Screenshot (default: beside the report, `report_screenshot.png`) and its check."""
    png_path = png_path or os.path.splitext(html_path)[0] + "_screenshot.png"
    return check_screenshot(screenshot(html_path, png_path, **kwargs))
