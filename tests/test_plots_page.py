"""`dvc plots show` opened in real headless Chromium, with every network name unresolvable: each chart must draw."""

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import run

pytestmark = pytest.mark.slow  # dvc plots show, then headless Chromium

# $CHROMIUM first (any build, by name or path); Debian calls it chromium, GitHub's ubuntu runners ship Google Chrome.
BROWSERS = (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((path for name in BROWSERS if name and (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def page(trained):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    run(["dvc", "plots", "show"], trained)
    return trained / "dvc_plots" / "index.html"


def chromium(*args, tmp_path):
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: a CDN script would fail to load
        "--allow-file-access-from-files",
        "--virtual-time-budget=15000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_every_chart_draws_offline(page, tmp_path):
    html = page.read_text()
    vega_plots = re.findall(r'<div id\s*=\s*"([^"]+)">\s*<script', html)
    assert len(vega_plots) == 2, vega_plots  # the loss curve and predictions vs targets

    dom = chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path).stdout.rsplit("</head>", 1)[-1]
    charts = re.split(r'<div id="', dom)[1:]
    drawn = {chunk.split('"', 1)[0]: chunk for chunk in charts if 'class="vega-embed' in chunk.split(">", 1)[0]}
    assert sorted(drawn) == sorted(vega_plots), f"charts that drew: {sorted(drawn)}"
    for plot_id, chunk in drawn.items():
        svg = re.search(r'<svg[^>]*class="marks"[^>]*width="(\d+)" height="(\d+)"', chunk)
        assert svg and int(svg.group(1)) > 100 and int(svg.group(2)) > 100, plot_id
        assert re.search(r'class="mark-(line|symbol) role-mark', chunk), f"{plot_id}: axes but no data marks"

    images = re.findall(r'<img src="([^"]+)"', dom)
    assert len(images) == 2, images  # loss.png and activations.png
    for src in images:
        assert (page.parent / src).is_file() or src.startswith("data:image/png")

    shot = chromium(
        f"--screenshot={tmp_path / 'page.png'}", "--window-size=1200,2400", page.as_uri(), tmp_path=tmp_path
    )
    assert (tmp_path / "page.png").stat().st_size > 10_000, shot.stderr
