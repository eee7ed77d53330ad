"""Metrics and report over a sweep folder: plain runs of the tiny model with three guidance scales, sweep.json
written with the shared writer (gen_worker/output/sweep_record.py)."""
import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from _evaluation_helpers import make_sweep, save_tiny_clip, save_tiny_inception, smooth_image
from conftest import PROMPTS
from evaluation import images as im
from evaluation import metrics, report

SCALES = ["1.5", "3", "7.5"]
NAMES = [f"guidance_scale-{g}" for g in SCALES]
ROWS = PROMPTS[:3] + [("7", "a very long prompt about " + "many things " * 40)]  # > 77 CLIP tokens


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_sd):
    from gen_worker.worker.pipeline import load_pipeline

    root = tmp_path_factory.mktemp("sweep")
    top = make_sweep(root, load_pipeline(tiny_sd, "fp32", "cpu"), tiny_sd, SCALES, ROWS)
    ref = root / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        smooth_image(rng).save(ref / f"ref_{i}.png")
    return {"root": root, "top": top, "ref": str(ref),
            "inception": save_tiny_inception(str(root / "inception.pt")), "clip": save_tiny_clip(str(root / "clip"))}


def _metrics(sweep, generated, out, *extra):
    args = ["--generated", generated, "--reference_dir", sweep["ref"], "--inception_weights", sweep["inception"],
            "--clip_model", sweep["clip"], "--out", str(out), "--device", "cpu", "--num_workers", "0", *extra]
    assert metrics.main(args) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def sweep_metrics(sweep, tmp_path_factory):
    reference_passes = []
    original = im.iterate_batches

    def counting(paths, transforms, batch_size=64, num_workers=0, desc=None):
        reference_passes.append(desc) if desc == "reference" else None
        return original(paths, transforms, batch_size, num_workers, desc)

    mp = pytest.MonkeyPatch()
    mp.setattr(im, "iterate_batches", counting)
    try:
        result = _metrics(sweep, sweep["top"], tmp_path_factory.mktemp("m") / "metrics.json")
    finally:
        mp.undo()
    return result, reference_passes


def test_every_configuration_is_scored_against_one_reference_pass(sweep, sweep_metrics):
    result, reference_passes = sweep_metrics
    assert reference_passes == ["reference"]  # the reference images were read once for the three configurations
    assert [c["name"] for c in result["configurations"]] == NAMES
    assert [c["overrides"] for c in result["configurations"]] == [{"guidance_scale": g} for g in SCALES]
    assert result["sweep"] == {"axes": {"guidance_scale": SCALES}}
    assert result["fid"] is None and result["counts"]["configurations"] == 3
    for c in result["configurations"]:
        assert c["counts"]["generated_images"] == len(ROWS)
        assert c["fid"] > 0 and c["kid"] is not None and c["kid_subset_size"] == len(ROWS)
        assert 0 < c["clip_score"] <= 100
    assert len({c["fid"] for c in result["configurations"]}) == 3  # the guidance scale changed the images
    assert result["protocol"]["clip"]["prompts"] == len(ROWS)
    assert result["protocol"]["clip"]["prompts_over_max_tokens"] == 1
    assert result["protocol"]["fid"]["reference_images"] == 6


def test_a_configuration_scores_as_the_same_folder_alone(sweep, sweep_metrics, tmp_path):
    result, _ = sweep_metrics
    config = result["configurations"][1]
    alone = _metrics(sweep, os.path.join(sweep["top"], config["folder"]), tmp_path / "alone.json")
    assert "configurations" not in alone
    for key in ("fid", "kid", "kid_std", "clip_score"):
        assert alone[key] == pytest.approx(config[key], rel=1e-9, abs=1e-12), key


def test_the_sweep_report(sweep, sweep_metrics, tmp_path):
    result, _ = sweep_metrics
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps(result))
    out = tmp_path / "report"
    for i, name in enumerate(NAMES):  # each configuration's speed, as its run's summary records it
        with open(os.path.join(sweep["top"], name, "summary.json"), "w") as f:
            json.dump({"images_per_second": 0.5 + i}, f)
    assert report.main(["--generated", sweep["top"], "--metrics", str(metrics_file), "--out_dir", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["swept"] == ["guidance_scale"] and [c["name"] for c in data["configurations"]] == NAMES
    assert "scores" not in data
    # same rows = same prompt and seed, one column per configuration
    assert len(data["samples"]) == len(ROWS)
    for smp in data["samples"]:
        assert [t.split("_")[1] for t in smp["thumbnails"]] == ["00", "01", "02"]
        assert all((out / t).is_file() and t.endswith(os.path.splitext(smp["file"])[0] + ".jpg")
                   for t in smp["thumbnails"])
    with Image.open(out / "grid.jpg") as grid:
        assert grid.size == (3 * 192, len(ROWS) * 192)
    # the plot: a PNG file, and the same PNG inside the page, before the samples
    plot = (out / "fid_clip.png").read_bytes()
    with Image.open(io.BytesIO(plot)) as img:
        assert img.format == "PNG" and img.width > 300
    page = (out / "report.html").read_text(encoding="utf-8")
    embedded = base64.b64encode(plot).decode("ascii")
    assert page.index(embedded) < page.index('class="samples"')
    assert page.index('class="configurations"') < page.index(embedded)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| configuration | guidance_scale | FID (lower is better) |" in md
    c0 = data["configurations"][0]
    assert f"| guidance_scale-1.5 | 1.5 | {c0['fid']:.3f} | {c0['kid']:.5f} ± {c0['kid_std']:.5f} |" in md
    assert "![FID versus CLIP score](fid_clip.png)" in md
    # speed beside quality: each configuration's images/s in the table, the quality-versus-speed plot
    speeds = [c["images_per_second"] for c in data["configurations"]]
    assert speeds == [0.5, 1.5, 2.5]
    assert "| images/s |" in md and f"| {c0['clip_score']:.3f} | {speeds[0]:.3f} |" in md
    assert "![quality against speed](speed.png)" in md and "[speed.md](speed.md)" in md
    assert (out / "speed.png").is_file() and "src='speed.png'" in page


def test_a_report_of_a_sweep_needs_the_sweeps_metrics(sweep, tmp_path):
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"fid": 1.0, "clip_score": 2.0, "counts": {}}))
    from evaluation.errors import EvaluationError
    with pytest.raises(EvaluationError, match="is a sweep but .* scores one folder"):
        report.main(["--generated", sweep["top"], "--metrics", str(single), "--out_dir", str(tmp_path / "r")])


def test_a_configuration_that_cannot_be_scored_stops_before_any_work(sweep, tmp_path):
    import shutil

    from evaluation.errors import EvaluationError
    from gen_worker.output.sweep_record import write_sweep_record

    top = tmp_path / "partial"
    shutil.copytree(os.path.join(sweep["top"], NAMES[0]), top / NAMES[0])
    write_sweep_record(str(top), {"guidance_scale": SCALES[:2]},
                       [{"overrides": {"guidance_scale": g}} for g in SCALES[:2]])
    # the missing folder is reported, not the missing weights: nothing was loaded before the check
    with pytest.raises(EvaluationError, match=f"generated image folder not found: .*{NAMES[1]}"):
        metrics.main(["--generated", str(top), "--reference_dir", sweep["ref"], "--clip_model", sweep["clip"],
                      "--inception_weights", str(tmp_path / "not_there.pt"), "--out", str(tmp_path / "m.json")])


def test_a_configuration_with_missing_images_is_refused_unless_allowed(sweep, tmp_path):
    import shutil

    from evaluation.errors import EvaluationError

    top = tmp_path / "incomplete"
    shutil.copytree(sweep["top"], top)
    gone = sorted(n for n in os.listdir(top / NAMES[1]) if n.endswith(".png"))[0]
    os.remove(top / NAMES[1] / gone)
    with pytest.raises(EvaluationError, match=f"{NAMES[1]}: 1 of the {len(ROWS)} images its manifest lists are "
                                              f"missing \\(first {gone}\\)"):
        _metrics(sweep, str(top), tmp_path / "m.json")
    result = _metrics(sweep, str(top), tmp_path / "m.json", "--allow_incomplete")
    counts = {c["name"]: c["counts"]["missing_images"] for c in result["configurations"]}
    assert counts == {name: int(name == NAMES[1]) for name in NAMES}
