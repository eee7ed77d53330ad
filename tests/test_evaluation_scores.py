"""Per-image scores (scores.csv), intervals, CMMD in the CLIP pass, seed sets and evaluation.compare,
through the metrics CLI with the tiny random-weight networks."""

import csv
import json
import os

import numpy as np
import pytest
import torch

from _evaluation_helpers import (UNVERIFIED, noisy, save_tiny_clip, save_tiny_inception, smooth_image,
                                 write_generated, write_reference)
from evaluation import cmmd as cmmdlib
from evaluation import compare, metrics, uncertainty
from evaluation.coco_prompts import write_prompts_csv
from evaluation.errors import EvaluationError
from gen_worker.output.sweep_record import configuration_name, write_sweep_record

N = 16


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("scores")
    rng = np.random.default_rng(0)
    base = [smooth_image(rng) for _ in range(N)]
    ref = write_reference(str(d / "ref"), [smooth_image(rng) for _ in range(N)])  # another draw than the generated
    ids = [str(500 + i) for i in range(N)]
    prompts = [f"a picture number {i} of {'red' if i % 2 else 'blue'} things" for i in range(N)]
    write_prompts_csv(list(zip(ids, prompts)), str(d / "prompts.csv"))
    return {"dir": d, "base": base, "ids": ids, "prompts": prompts, "ref": ref, "csv": str(d / "prompts.csv"),
            "inception": save_tiny_inception(str(d / "inception.pt")), "clip": save_tiny_clip(str(d / "clip"))}


def _folder(assets, name, transform, seed_start=42):
    folder = assets["dir"] / name
    if not folder.exists():
        write_generated(str(folder), [transform(b) for b in assets["base"]], assets["ids"],
                        [seed_start + i for i in range(N)])
    return str(folder)


def _metrics(assets, generated, out_name, *extra):
    out = assets["dir"] / out_name
    assert metrics.main([*UNVERIFIED, generated, "--reference_dir", assets["ref"], "--prompts_csv", assets["csv"],
                         "--inception_weights", assets["inception"], "--clip_model", assets["clip"], "--out", str(out),
                         "--device", "cpu", "--num_workers", "0", "--batch_size", "5", "--seed_start", "42",
                         *extra]) == 0
    return json.loads(out.read_text())


def _direct_embeddings(clip_dir, paths):
    from PIL import Image
    from transformers import CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    processor = CLIPImageProcessorPil.from_pretrained(clip_dir, local_files_only=True)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=processor(images=[Image.open(p).convert("RGB") for p in paths],
                                                              return_tensors="pt")["pixel_values"])
    return getattr(out, "pooler_output", out).double().numpy()


def test_per_image_scores_intervals_and_cmmd(assets):
    gen = _folder(assets, "plain", lambda im: im)
    result = _metrics(assets, gen, "plain.json")
    with open(os.path.join(gen, "scores.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"{i}_seed{42 + k}.png" for k, i in enumerate(assets["ids"])]
    assert [int(r["prompt_row"]) for r in rows] == list(range(N)) and rows[3]["seed"] == "45"
    per_image = np.array([float(r["clip_score"]) for r in rows])
    assert result["clip_score"] == pytest.approx(max(per_image.mean(), 0.0), rel=1e-12)
    assert len(set(per_image.round(6))) > 1  # per image, not one number repeated
    low, high = result["intervals"]["clip_score"]
    assert low < result["clip_score"] < high
    assert [low, high] == pytest.approx(uncertainty.bootstrap_interval(per_image))
    assert result["protocol"]["intervals"]["seed"] == uncertainty.BOOTSTRAP_SEED
    # CMMD from the same CLIP pass equals the paper's formula on embeddings computed straight with transformers
    gen_paths = [os.path.join(gen, r["file"]) for r in rows]
    ref_paths = sorted(os.path.join(assets["ref"], n) for n in os.listdir(assets["ref"]))
    expected = cmmdlib.cmmd(_direct_embeddings(assets["clip"], ref_paths), _direct_embeddings(assets["clip"], gen_paths))
    assert result["cmmd"] == pytest.approx(expected, rel=1e-5) and result["cmmd"] > 0
    assert result["protocol"]["cmmd"]["sigma"] == 10.0 and result["protocol"]["cmmd"]["reference_images"] == N
    summary = json.loads((assets["dir"] / "plain" / "scores.json").read_text())
    assert summary["fid"] == result["fid"] and summary["cmmd"] == result["cmmd"]


def test_cmmd_from_saved_reference_statistics_is_the_same(assets):
    gen = _folder(assets, "plain", lambda im: im)
    stats = str(assets["dir"] / "stats.npz")
    first = _metrics(assets, gen, "a.json", "--save_reference_stats", stats)
    out = assets["dir"] / "b.json"
    assert metrics.main([*UNVERIFIED, gen, "--reference_stats", stats, "--prompts_csv", assets["csv"],
                         "--inception_weights", assets["inception"], "--clip_model", assets["clip"], "--out", str(out),
                         "--num_workers", "0", "--seed_start", "42"]) == 0
    second = json.loads(out.read_text())
    assert second["cmmd"] == pytest.approx(first["cmmd"], rel=1e-6)
    assert [w for w in second["warnings"] if "not verified" not in w] == []  # another tool's images: said
    assert second["counts"]["ignored_files"] == 0  # the scores.csv and scores.json of the first run are not strays
    other = save_tiny_clip(str(assets["dir"] / "clip_other"), seed=1)
    assert metrics.main([*UNVERIFIED, gen, "--reference_stats", stats, "--prompts_csv", assets["csv"],
                         "--inception_weights", assets["inception"], "--clip_model", other, "--out", str(out),
                         "--num_workers", "0", "--seed_start", "42"]) == 0
    third = json.loads(out.read_text())
    assert third["cmmd"] is None and any("another CLIP model: no CMMD" in w for w in third["warnings"])
    assert _metrics(assets, gen, "c.json", "--no_cmmd")["cmmd"] is None


def test_compare_pairs_images_by_file_name(assets, capsys):
    a = _folder(assets, "plain", lambda im: im)
    b = _folder(assets, "noisy", lambda im: noisy(im, 40, np.random.default_rng(5)))
    ra, rb = _metrics(assets, a, "ma.json"), _metrics(assets, b, "mb.json")
    out = assets["dir"] / "cmp.json"
    assert compare.main([a, b, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == N and result["only_in_a"] == 0
    read = lambda folder: {r["file"]: float(r["clip_score"]) for r in csv.DictReader(open(os.path.join(folder, "scores.csv")))}
    sa, sb = read(a), read(b)
    diff = result["per_image"]["clip_score"]["difference"]
    assert diff["mean"] == pytest.approx(np.mean([sb[f] - sa[f] for f in sa]), rel=1e-9)
    assert diff["interval"] == pytest.approx(uncertainty.bootstrap_interval([sb[f] - sa[f] for f in sorted(sa)]))
    assert result["set_level"]["fid"]["difference"] == pytest.approx(rb["fid"] - ra["fid"])
    assert "seed_sets" not in result["set_level"]["fid"]  # plain folders: no seed-set std
    assert "clip_score: A" in capsys.readouterr().out
    with pytest.raises(EvaluationError, match="no per-image scores in"):
        compare.main([a, str(assets["ref"])])


def _seed_sweep(assets, top, seed_starts, variants):
    """A sweep folder by hand: configurations (variant x seed_start), each a run folder with its settings record."""
    configurations = []
    for vname, transform in variants.items():
        for s in seed_starts:
            overrides = {"noise": vname, "seed_start": str(s)}
            name = configuration_name(overrides)
            folder = top / name
            write_generated(str(folder), [transform(b, s) for b in assets["base"]], assets["ids"],
                            [s + i for i in range(N)])
            (folder / "generation_settings.json").write_text(json.dumps({"settings": {"seed_start": s}}))
            configurations.append({"name": name, "folder": name, "overrides": overrides})
    write_sweep_record(str(top), {"noise": list(variants), "seed_start": [str(s) for s in seed_starts]}, configurations)
    return str(top)


@pytest.fixture(scope="module")
def seed_sweep(assets):
    """Two noise levels x three seed_start values, scored: (sweep folder, metrics.json path, its content)."""
    variants = {"8": lambda im, s: noisy(im, 8, np.random.default_rng(s)),
                "40": lambda im, s: noisy(im, 40, np.random.default_rng(s))}
    top = _seed_sweep(assets, assets["dir"] / "seedsweep", [0, 100, 200], variants)
    out = assets["dir"] / "sweep.json"
    assert metrics.main([*UNVERIFIED, top, "--reference_dir", assets["ref"], "--prompts_csv", assets["csv"],
                         "--inception_weights", assets["inception"], "--clip_model", assets["clip"], "--out", str(out),
                         "--num_workers", "0"]) == 0
    return top, str(out), json.loads(out.read_text())


def test_a_sweep_over_seed_start_gives_mean_and_std_per_group(seed_sweep):
    top, _, result = seed_sweep
    groups = result["seed_sets"]
    assert [g["name"] for g in groups] == ["noise-8", "noise-40"] and groups[0]["seed_starts"] == [0, 100, 200]
    fids = {c["name"]: c["fid"] for c in result["configurations"]}
    for g in groups:
        values = [fids[n] for n in g["configurations"]]
        assert g["fid"]["mean"] == pytest.approx(np.mean(values)) and g["fid"]["n"] == 3
        assert g["fid"]["std"] == pytest.approx(np.std(values, ddof=1)) and g["fid"]["std"] > 0
    a, b = (os.path.join(top, g["configurations"][0]) for g in groups)
    cmp = compare.compare(a, b)
    s = cmp["set_level"]["fid"]["seed_sets"]
    assert s["difference"] == pytest.approx(groups[1]["fid"]["mean"] - groups[0]["fid"]["mean"])
    assert s["std"] == pytest.approx(np.hypot(groups[0]["fid"]["std"], groups[1]["fid"]["std"]))


def test_the_report_shows_intervals_and_groups_seed_sets(assets, seed_sweep):
    from evaluation import report

    top, metrics_path, result = seed_sweep
    built = report.build_report(top, metrics_path, assets["csv"], str(assets["dir"] / "rep"), grid_size=2)
    report.write_report(built, str(assets["dir"] / "rep"))
    md = (assets["dir"] / "rep" / "report.md").read_text(encoding="utf-8")
    g = result["seed_sets"][0]
    assert (f"| noise-8 | 0, 100, 200 | {g['fid']['mean']:.3f} ± {g['fid']['std']:.3f} | {g['kid']['mean']:.5f} ± "
            f"{g['kid']['std']:.5f} | {g['cmmd']['mean']:.4f} ± {g['cmmd']['std']:.4f} |") in md
    c = result["configurations"][0]
    low, high = c["intervals"]["clip_score"]
    assert f"| {c['name']} | clip_score | {c['clip_score']:.3f} | [{low:.3f}, {high:.3f}] |" in md
    page = (assets["dir"] / "rep" / "report.html").read_text(encoding="utf-8")
    assert "<table class='seed-sets'>" in page and f"[{low:.3f}, {high:.3f}]" in page
