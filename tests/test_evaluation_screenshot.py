"""The report as a browser shows it: headless Chromium lays the page out and takes a screenshot.

Needs Debian's ``chromium`` (skipped without it; CI installs it and sets T2I_REQUIRE_CHROMIUM=1, which turns
the skip into a failure)."""
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from _evaluation_helpers import smooth_image, write_generated
from evaluation import report
from evaluation.coco_prompts import write_prompts_csv
from evaluation.screenshot_report import screenshot
from gen_worker.output.sweep_record import write_sweep_record

LONG = "an extremely detailed description of a busy street market at dusk, " * 12

# Appended to a copy of the page: the browser's own layout of what matters, written into the DOM.
MEASURE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height, r.top + scrollY]; };
const out = {thumbs: [...document.querySelectorAll('img.thumb')].map(box),
             prompts: [...document.querySelectorAll('.prompt')].map(e =>
                 [box(e)[1], parseFloat(getComputedStyle(e).lineHeight)]),
             plot: box(document.querySelector('img.plot')), samples: box(document.querySelector('table.samples')),
             rendering: getComputedStyle(document.querySelector('img.thumb')).imageRendering};
document.body.insertAdjacentHTML('beforeend', '<pre id="measure">' + JSON.stringify(out) + '</pre>');
</script>"""


@pytest.fixture
def sweep_report(tmp_path):
    """A three-configuration sweep of 32-pixel images (one with a long prompt) and its report."""
    top = tmp_path / "sweep"
    ids = [str(i) for i in range(4)]
    configs = []
    for c, g in enumerate(["1.5", "3", "7.5"]):
        rng = np.random.default_rng(c)
        write_generated(str(top / f"guidance_scale-{g}"), [smooth_image(rng, size=32) for _ in ids], ids,
                        [42 + i for i in range(4)])
        configs.append({"overrides": {"guidance_scale": g}})
    write_sweep_record(str(top), {"guidance_scale": ["1.5", "3", "7.5"]}, configs)
    csv_path = tmp_path / "prompts.csv"
    write_prompts_csv(list(zip(ids, [LONG, "a cat", "a dog", "a bus"])), str(csv_path))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"configurations": [
        {"name": f"guidance_scale-{g}", "fid": fid, "kid": 0.01, "kid_std": 0.001, "clip_score": clip,
         "counts": {"generated_images": 4}}
        for g, fid, clip in (("1.5", 30.0, 25.0), ("3", 24.0, 27.5), ("7.5", 26.0, 29.0))]}))
    out = tmp_path / "report"
    assert report.main(["--generated", str(top), "--metrics", str(metrics), "--prompts_csv", str(csv_path),
                        "--out_dir", str(out), "--seed_start", "42"]) == 0
    return out


def test_the_report_in_headless_chromium(sweep_report, chromium):
    page = sweep_report / "report.html"
    measured_page = sweep_report / "measure.html"
    measured_page.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"),
                             encoding="utf-8")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                          "--dump-dom", measured_page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    layout = json.loads(dom.rsplit('<pre id="measure">', 1)[1].split("</pre>", 1)[0])  # the last: not the script's

    assert len(layout["thumbs"]) == 12  # 4 samples x 3 configurations
    assert all(w == 160 and h == 160 for w, h, _ in layout["thumbs"])  # 32-pixel images shown 160 px
    assert layout["rendering"] == "pixelated"
    heights = [h / line for h, line in layout["prompts"]]
    assert max(heights) <= 3.05 and heights[0] > 2.5  # the long prompt: three lines, no more
    assert layout["plot"][2] < layout["samples"][2]  # the plot before the sample grid

    shot = screenshot(str(page), str(sweep_report / "report.png"), 1280, 2000, browser=chromium)
    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # a page, not a blank window
