"""report.html in headless Chromium: the page paints, and every embedded figure decodes and is
not blank (the page's own check, read back from the DOM); a broken page fails that check.

Skipped only when the ``chromium`` binary is missing (``make browser`` installs Debian's).
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from helpers import CHROMIUM, chromium, image_check
from PIL import Image
from report_runs import shared_run

from drprobe.cli import main

pytestmark = [pytest.mark.slow,  # a real run, a report and a headless browser
              pytest.mark.skipif(CHROMIUM is None,
                                 reason="chromium is not installed (make browser)")]


@pytest.fixture(scope="module")
def page(tmp_path_factory, feature_cache):
    run = shared_run(feature_cache, tmp_path_factory.mktemp("browser") / "run")
    assert main(["report", str(run), "--formats", "png", "--no-progress"]) == 0
    return run / "report" / "report.html"


def test_every_image_loads_and_is_not_blank(tmp_path, page):
    n_figures = len(re.findall(r"<img ", page.read_text()))
    assert n_figures == 10  # the 8 figures of one run + 2 comparing its two variants
    check = image_check(tmp_path, page)
    assert check["data-status"] == "ok", check["text"]
    assert check["data-images"] == str(n_figures) and check["data-bad"] == "0"


def test_screenshot_is_not_blank(tmp_path, page):
    shot = tmp_path / "page.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
    assert (pixels.min(axis=2) < 128).mean() > 0.01  # text, tables and plot lines


def test_broken_images_fail_the_check(tmp_path, page):
    """A white image and an undecodable one make the page's own check report two failures."""
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), "white").save(buf, format="PNG")
    white = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    html = page.read_text()
    sources = re.findall(r'src="(data:image/png;base64,[^"]+)"', html)
    html = html.replace(sources[0], white).replace(sources[1], "data:image/png;base64,AAAA")
    broken = tmp_path / "broken.html"
    broken.write_text(html)
    check = image_check(tmp_path, broken)
    assert check["data-status"] == "failed"
    assert check["data-bad"] == "2", check["text"]
