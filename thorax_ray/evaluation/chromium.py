"""Renders report.html in headless Chromium (Debian's `chromium` package) and checks it:

- `render_report`: a screenshot, the page not blank and its plots visible. The report's own styling is
  grey, so saturated (coloured) pixels come from the embedded plots; a broken or missing image leaves none.
- `measure_layout`: where elements lie in a window of a given size (the first viewport a reader sees), the
  page's full height and whether every image loaded (a copy of the page with a small measuring script
  added, read back with --dump-dom; the report itself has no script).
- `print_pdf`: the page printed to PDF (--print-to-pdf) and its page count.

    check = render_report("out/demo/evaluation/report.html", "out/demo/evaluation/report_screenshot.png")
    print(check.format())
    layout = measure_layout("out/demo/evaluation/report.html", ["#summary", "#headline-chart"])
    print(layout.page_height, layout.in_first_viewport("#summary"), layout.broken_images)
"""
from __future__ import annotations

import contextlib
import html
import json
import os
import pathlib
import re
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


@dataclass(frozen=True)
class Box:
    """An element's border box in page coordinates (CSS px from the top left of the document) and whether
    it is drawn (Element.checkVisibility: false inside a closed <details>, which still lays it out)."""

    top: float
    left: float
    width: float
    height: float
    visible: bool = True

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def right(self) -> float:
        return self.left + self.width


@dataclass(frozen=True)
class ImageState:
    alt: str
    natural_width: int
    natural_height: int


@dataclass(frozen=True)
class Layout:
    """The page as laid out in a `width` x `height` window: every element each selector matched (in
    document order) and every <img>."""

    width: int
    height: int
    page_height: int  # the document's full height (scrollHeight)
    boxes: dict[str, list[Box]]
    images: list[ImageState]

    def in_first_viewport(self, selector: str) -> bool:
        """Every element `selector` matched is drawn (visible, non-empty box) wholly inside the first window,
        and there is at least one."""
        found = self.boxes.get(selector) or []
        return bool(found) and all(b.visible and b.width > 0 and b.height > 0 and b.top >= 0 and b.left >= 0
                                   and b.bottom <= self.height and b.right <= self.width for b in found)

    @property
    def broken_images(self) -> list[str]:
        """The alt text of every image that did not load (natural width 0)."""
        return [image.alt for image in self.images if image.natural_width <= 0]


def find_chromium() -> str | None:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(browser: str | None) -> str:
    browser = browser or find_chromium()
    if browser is None:
        raise RenderError("headless Chromium not found: install Debian's `chromium` package "
                          f"(apt-get install chromium) or set {CHROMIUM_ENV}")
    return browser


def _run_chromium(browser: str, html_path: str, url: str, options: list[str], timeout_s: float
                  ) -> subprocess.CompletedProcess:
    """One headless Chromium run on `url` with a throwaway profile; RenderError when it times out."""
    with tempfile.TemporaryDirectory(prefix="thorax-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--hide-scrollbars", "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                   *options, url]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            raise RenderError(f"Chromium did not finish rendering {html_path} in {timeout_s:.0f} s") from error


def screenshot(html_path: str, png_path: str, *, width: int = 1400, height: int = 12000,
               timeout_s: float = 120.0, browser: str | None = None, url: str | None = None) -> str:
    """Full-window screenshot of a local HTML file (tall window: the whole report fits); `url`: load this
    instead (a copy of the page), errors still naming `html_path`."""
    browser = _browser(browser)
    url = url or pathlib.Path(html_path).resolve().as_uri()
    png_path = os.path.abspath(png_path)
    os.makedirs(os.path.dirname(png_path), exist_ok=True)
    done = _run_chromium(browser, html_path, url, [f"--window-size={width},{height}", f"--screenshot={png_path}"],
                         timeout_s)
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
    """Screenshot (default: beside the report, `report_screenshot.png`) of the report with every section
    open (every plot drawn, as printed; the page itself is not changed) and its check."""
    png_path = png_path or os.path.splitext(html_path)[0] + "_screenshot.png"
    text = pathlib.Path(html_path).read_text(encoding="utf-8")
    with _copy_beside(html_path, with_sections_open(text)) as url:
        return check_screenshot(screenshot(html_path, png_path, url=url, **kwargs))


@contextlib.contextmanager
def _copy_beside(html_path: str, text: str):
    """A hidden copy of the page with `text`, beside it (relative links resolve alike), removed after;
    yields its file URL."""
    folder = os.path.dirname(os.path.abspath(html_path))
    with tempfile.NamedTemporaryFile("w", suffix=".html", prefix=".layout-", dir=folder, encoding="utf-8",
                                     delete=False) as handle:
        handle.write(text)
    try:
        yield pathlib.Path(handle.name).as_uri()
    finally:
        os.unlink(handle.name)


def with_sections_open(text: str) -> str:
    """The page with every <details> open (as the report's print stylesheet shows it)."""
    return re.sub(r"<details(?=[\s>])(?![^>]*\bopen\b)", "<details open", text)


LAYOUT_ID = "thorax-layout"
# Run on `load` (every data-URI image decoded by then): the boxes of what each selector matches, the page
# height and each image's natural size, written as JSON into an element that --dump-dom prints.
_LAYOUT_SCRIPT = """<script>
window.addEventListener("load", function () {
  var selectors = %s, boxes = {};
  selectors.forEach(function (selector) {
    boxes[selector] = Array.prototype.map.call(document.querySelectorAll(selector), function (element) {
      var r = element.getBoundingClientRect();
      return [r.top + window.scrollY, r.left + window.scrollX, r.width, r.height, element.checkVisibility()];
    });
  });
  var images = Array.prototype.map.call(document.images, function (image) {
    return [image.alt, image.naturalWidth, image.naturalHeight];
  });
  var out = document.createElement("pre");
  out.id = "%s";
  out.textContent = JSON.stringify({page_height: document.documentElement.scrollHeight, boxes: boxes,
                                    images: images});
  document.body.appendChild(out);
});
</script>"""


def measure_layout(html_path: str, selectors=(), *, width: int = 1400, height: int = 900,
                   timeout_s: float = 120.0, browser: str | None = None) -> Layout:
    """The page laid out in a `width` x `height` window: the boxes of the elements each CSS selector
    matches, the document's height, every image's natural size. Measured on a copy of the page (beside
    it, removed after) with a measuring script added before </body>; the page itself is not changed."""
    browser = _browser(browser)
    text = pathlib.Path(html_path).read_text(encoding="utf-8")
    script = _LAYOUT_SCRIPT % (json.dumps(list(selectors)), LAYOUT_ID)
    cut = text.lower().rfind("</body>")
    with _copy_beside(html_path, text[:cut] + script + text[cut:] if cut >= 0 else text + script) as url:
        done = _run_chromium(browser, html_path, url, [f"--window-size={width},{height}", "--dump-dom"], timeout_s)
    found = re.search(rf'<pre id="{LAYOUT_ID}">(.*?)</pre>', done.stdout, flags=re.S)
    if done.returncode != 0 or found is None:
        raise RenderError(f"Chromium failed to lay out {html_path} (exit {done.returncode}): {done.stderr[-800:]}")
    data = json.loads(html.unescape(found.group(1)))
    return Layout(width=width, height=height, page_height=int(data["page_height"]),
                  boxes={k: [Box(*map(float, b[:4]), visible=bool(b[4])) for b in v] for k, v in data["boxes"].items()},
                  images=[ImageState(str(a), int(w), int(h)) for a, w, h in data["images"]])


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def print_pdf(html_path: str, pdf_path: str, *, timeout_s: float = 180.0, browser: str | None = None) -> int:
    """The page printed to `pdf_path` as Chromium prints it (print media, no header or footer); returns
    its page count (RenderError when nothing was printed)."""
    browser = _browser(browser)
    url = pathlib.Path(html_path).resolve().as_uri()
    pdf_path = os.path.abspath(pdf_path)
    os.makedirs(os.path.dirname(pdf_path), exist_ok=True)
    if os.path.exists(pdf_path):
        os.remove(pdf_path)  # an earlier print is never counted as this one
    done = _run_chromium(browser, html_path, url, ["--no-pdf-header-footer", f"--print-to-pdf={pdf_path}"],
                         timeout_s)
    pages = pdf_pages(pdf_path) if os.path.exists(pdf_path) else 0
    if done.returncode != 0 or pages == 0:
        raise RenderError(f"Chromium failed to print {html_path} (exit {done.returncode}): {done.stderr[-800:]}")
    return pages


def pdf_pages(pdf_path: str) -> int:
    """Page objects in a PDF that Chromium wrote (its page objects are not in compressed object streams)."""
    with open(pdf_path, "rb") as handle:
        return len(_PDF_PAGE.findall(handle.read()))
