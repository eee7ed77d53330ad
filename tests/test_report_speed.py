"""evaluation/report.py's speed beside quality (issue 20): each configuration's speed from its run summary, the
table and the plot of FID and CLIP score against images per second."""
import json
import os

from PIL import Image

from evaluation.report import speed_versus_quality
from gen_worker.output import layout


def _configuration(generated, name, fid, clip, images_per_second, peak=None):
    os.makedirs(generated / name)
    with open(generated / name / layout.RUN_SUMMARY_FILE, "w") as f:
        json.dump({"images_per_second": images_per_second, "seconds_per_image": 1 / images_per_second,
                   "denoiser_seconds_per_image": 0.5 / images_per_second, "peak_gpu_memory_bytes": peak}, f)
    return {"name": name, "folder": name, "fid": fid, "clip_score": clip}


def test_each_configuration_gets_its_speed_and_a_point_named_by_it(tmp_path):
    generated, out = tmp_path / "generated", tmp_path / "report"
    out.mkdir()
    configurations = [_configuration(generated, "cache-none", 20.0, 31.0, 0.5, peak=3 * 2**30),
                      _configuration(generated, "cache-first_block_0.1", 21.5, 30.5, 0.9, peak=3 * 2**30)]
    speed = speed_versus_quality(configurations, str(generated), str(out))
    assert speed == {"table": "speed.md", "plot": "speed.png"}
    assert [c["images_per_second"] for c in configurations] == [0.5, 0.9]
    table = (out / "speed.md").read_text()
    assert "| cache-first_block_0.1 | 0.900 | 1.1111 | 0.5556 | 3.00 | 21.500 | 30.500 |" in table
    assert Image.open(out / "speed.png").size[0] > 500


def test_no_plot_without_two_measured_configurations(tmp_path):
    generated, out = tmp_path / "generated", tmp_path / "report"
    out.mkdir()
    configurations = [_configuration(generated, "only", 20.0, 31.0, 0.5), {"name": "unrun", "folder": "unrun"}]
    assert speed_versus_quality(configurations, str(generated), str(out))["plot"] is None
    assert configurations[1]["images_per_second"] is None
    assert "| unrun | n/a | n/a | n/a | n/a | n/a | n/a |" in (out / "speed.md").read_text()
    assert not os.path.exists(out / "speed.png")
