import json
import os

import numpy as np
import pytest

from _evaluation_helpers import smooth_image, write_generated
from evaluation import report
from evaluation.coco_prompts import write_prompts_csv
from evaluation.errors import EvaluationError


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(20)]
    gen = tmp_path / "gen"
    write_generated(str(gen), [smooth_image(rng) for _ in ids], ids, [42 + i for i in range(20)])
    csv_path = tmp_path / "prompts.csv"
    prompts = [f"prompt {i}" for i in range(20)]
    prompts[0] = 'a <b>bold</b> "cat" | pipe & 猫'
    write_prompts_csv(list(zip(ids, prompts)), str(csv_path))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({
        "fid": 12.3456, "kid": 0.0123, "kid_std": 0.0045, "clip_score": 30.5,
        "counts": {"generated_images": 20, "reference_images": 40, "prompt_rows": 20},
        "settings": {"device": "cpu"}, "warnings": [],
    }))
    return tmp_path, gen, csv_path, metrics


def test_report_is_written(setup):
    tmp_path, gen, csv_path, metrics = setup
    out = tmp_path / "report"
    before = sorted(os.listdir(gen))
    assert report.main(["--generated", str(gen), "--metrics", str(metrics), "--prompts_csv", str(csv_path),
                        "--out_dir", str(out), "--grid_size", "6"]) == 0
    assert sorted(os.listdir(gen)) == before  # nothing written next to the generated images
    data = json.loads((out / "report.json").read_text())
    assert data["scores"] == {"fid": 12.3456, "kid": 0.0123, "kid_std": 0.0045, "clip_score": 30.5}
    assert [c["name"] for c in data["configurations"]] == ["gen"] and data["configurations"][0]["images"] == 20
    assert data["counts"]["generated_images"] == 20 and data["counts"]["reference_images"] == 40
    assert len(data["samples"]) == 6
    assert data["samples"][0] == {"file": "0_seed42.png", "image_id": "0", "seed": 42, "prompt_row": 0,
                                  "prompt": 'a <b>bold</b> "cat" | pipe & 猫', "thumbnails": data["samples"][0]["thumbnails"],
                                  "thumbnail_sizes": [[64, 64]]}
    assert data["samples"][-1]["file"] == "19_seed61.png"
    for smp in data["samples"]:
        assert (out / smp["thumbnails"][0]).is_file()
    assert (out / "grid.jpg").is_file()
    assert data["plot"] is None and not (out / "fid_clip.png").exists()  # one configuration: no curve
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| gen | 12.346 | 0.01230 ± 0.00450 | 30.500 | n/a | 20 |" in md and "grid.jpg" in md
    assert '| `0_seed42.png` | a &lt;b&gt;bold&lt;/b&gt; "cat" \\| pipe &amp; 猫 |' in md
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "12.346" in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page


def test_report_refuses_out_dir_inside_generated(setup):
    _, gen, _, metrics = setup
    for out in (gen, gen / "report"):
        with pytest.raises(EvaluationError, match="is inside the generated folder"):
            report.main(["--generated", str(gen), "--metrics", str(metrics), "--out_dir", str(out)])


def test_report_warns_when_folder_changed_and_handles_missing_metrics(setup):
    tmp_path, gen, csv_path, metrics = setup
    os.remove(gen / "3_seed45.png")
    data = report.build_report(str(gen), str(metrics), str(csv_path), str(tmp_path / "r"), grid_size=4)
    assert any("computed on 20 images, the folder now has 19" in w for w in data["warnings"])
    with pytest.raises(EvaluationError, match="metrics file not found"):
        report.main(["--generated", str(gen), "--metrics", str(tmp_path / "nope.json"), "--out_dir", str(tmp_path / "r")])


def test_pick_samples():
    assert report.pick_samples(5, 16) == [0, 1, 2, 3, 4]
    assert report.pick_samples(100, 4) == [0, 33, 66, 99]
    assert report.pick_samples(100, 1) == [0]
    assert report.pick_samples(0, 4) == []


def test_report_shows_what_the_run_counted_against_its_images(setup):
    """Images the safety checker blacked out (--safety_checker) or that came out constant are in the scores."""
    tmp_path, gen, csv_path, metrics = setup
    (gen / "summary.json").write_text(json.dumps({"nsfw_flagged": 3, "constant_images": 4}))
    out = tmp_path / "report"
    assert report.main(["--generated", str(gen), "--metrics", str(metrics), "--prompts_csv", str(csv_path),
                        "--out_dir", str(out), "--grid_size", "2"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert (data["counts"]["nsfw_flagged"], data["counts"]["constant_images"]) == (3, 4)
    assert "3 generated images are flagged by the safety checker (black): they are in the scores" in data["warnings"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<tr><th>flagged by the safety checker</th><td>3</td></tr>" in page


def test_the_page_reads_well_in_a_browser(setup):
    """Without a browser: thumbnails get one display size (small ones pixelated), a long prompt is clamped
    with its full text in the title, and the tables come before the samples."""
    import html as html_module
    import re

    tmp_path, gen, csv_path, metrics = setup
    long_prompt = "a very long prompt " * 30 + '<with "quotes">'
    rows = [(str(i), long_prompt if i == 0 else f"prompt {i}") for i in range(20)]
    write_prompts_csv(rows, str(csv_path))
    out = tmp_path / "report"
    assert report.main(["--generated", str(gen), "--metrics", str(metrics), "--prompts_csv", str(csv_path),
                        "--out_dir", str(out), "--grid_size", "4"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    thumbs = re.findall(r"<img class='thumb[^>]*>", page)
    assert len(thumbs) == 4
    # 64-pixel images: shown 160 px, pixelated (CSS), whatever their own size
    assert all("width='160'" in t and "height='160'" in t and "thumb small" in t for t in thumbs)
    assert "img.thumb { width: 160px; height: 160px;" in page and "img.small { image-rendering: pixelated; }" in page
    assert "-webkit-line-clamp: 3; line-clamp: 3;" in page
    assert f"<div class='prompt' title='{html_module.escape(long_prompt)}'>" in page
    assert page.index("class=\"configurations\"") < page.index("class=\"samples\"")
    # thumbnails of images larger than the display size are not pixelated
    big = tmp_path / "big"
    write_generated(str(big), [smooth_image(np.random.default_rng(1), size=320)], ["0"], [42])
    assert report.main(["--generated", str(big), "--metrics", str(metrics), "--prompts_csv", str(csv_path),
                        "--out_dir", str(tmp_path / "r2")]) == 0
    page = (tmp_path / "r2" / "report.html").read_text(encoding="utf-8")
    assert "<img class='thumb' " in page and "thumb small" not in page
