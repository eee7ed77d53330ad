"""FID / CLIP score end to end through the metrics CLI, with tiny random-weight networks saved by the tests."""

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from _evaluation_helpers import (UNVERIFIED, blurred, noisy, save_tiny_clip, save_tiny_inception, smooth_image,
                                 write_generated)
from evaluation import metrics
from evaluation.coco_prompts import write_prompts_csv
from evaluation.errors import EvaluationError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 24


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("metrics")
    rng = np.random.default_rng(0)
    base = [smooth_image(rng) for _ in range(N)]
    ids = [str(1000 + i) for i in range(N)]
    seeds = [42 + i for i in range(N)]
    ref = d / "ref"
    ref.mkdir()
    for i, img in enumerate(base):
        img.save(ref / f"ref_{i:03d}.png")
    gen = d / "gen"
    write_generated(str(gen), base, ids, seeds)
    # things the metrics must ignore
    (gen / "grid").mkdir()
    base[0].save(gen / "grid" / "grid_seed1.png")
    base[1].save(gen / ".partial_seed43.png")
    (gen / "1000_seed42.png.tmp").write_bytes(b"half a file")
    (gen / "notes.txt").write_text("x")
    base[2].save(gen / "cover.png")
    prompts = [f"photo {i}, with \"quotes\", commas and 猫 nr {i}" for i in range(N)]
    write_prompts_csv(list(zip(ids, prompts)), str(d / "prompts.csv"))
    return {
        "dir": d, "base": base, "ids": ids, "seeds": seeds, "prompts": prompts,
        "ref": str(ref), "gen": str(gen), "csv": str(d / "prompts.csv"),
        "inception": save_tiny_inception(str(d / "inception-2015-12-05.pt")),
        "clip": save_tiny_clip(str(d / "clip")),
    }


def _run(assets, out_name, *extra, gen=None, clip=False, fid=True):
    out = assets["dir"] / out_name
    args = [*UNVERIFIED, gen or assets["gen"], "--out", str(out), "--device", "cpu", "--num_workers", "0",
            "--batch_size", "10", "--inception_weights", assets["inception"]]
    if not clip:
        args.append("--no_clip")
    else:
        args += ["--prompts_csv", assets["csv"], "--clip_model", assets["clip"]]
    if not fid:
        args.append("--no_fid")
    args += list(extra)
    assert metrics.main(args) == 0
    return json.loads(out.read_text())


def _variant(assets, name, transform):
    folder = assets["dir"] / name
    if not folder.exists():
        write_generated(str(folder), [transform(b) for b in assets["base"]], assets["ids"], assets["seeds"])
    return str(folder)


@pytest.fixture(scope="module")
def self_run(assets):
    stats = str(assets["dir"] / "ref_stats.npz")
    result = _run(assets, "self.json", "--reference_dir", assets["ref"], "--save_reference_stats", stats)
    return result, stats


def test_fid_of_folder_against_itself_is_zero(self_run):
    result, stats = self_run
    assert abs(result["fid"]) < 1e-3
    # KID's unbiased estimator is not 0 for the very same samples (it leaves out only the within-set
    # diagonals), so here only: computed, with the subset size cut to the number of images
    assert result["kid"] is not None and result["kid_subset_size"] == N
    assert result["clip_score"] is None
    assert result["counts"]["generated_images"] == N  # grid/, hidden, .tmp, .txt and cover.png ignored
    assert result["counts"]["ignored_files"] == 5
    assert result["counts"]["reference_images"] == N
    assert os.path.isfile(stats)


def test_fid_grows_with_perturbation(assets, self_run):
    _, stats = self_run
    fids, kids = {}, {}
    for name, transform in {
        "noise8": lambda im: noisy(im, 8, np.random.default_rng(1)),
        "noise32": lambda im: noisy(im, 32, np.random.default_rng(1)),
        "blur1": lambda im: blurred(im, 1),
        "blur3": lambda im: blurred(im, 3),
    }.items():
        gen = _variant(assets, name, transform)
        result = _run(assets, f"{name}.json", "--reference_stats", stats, gen=gen)
        fids[name], kids[name] = result["fid"], result["kid"]
    assert 1e-2 < fids["noise8"] < fids["noise32"]
    assert 1e-2 < fids["blur1"] < fids["blur3"]
    # (perturbed copies of the references: paired samples, so KID may be below 0 for small changes)
    assert kids["noise8"] < kids["noise32"] and kids["blur1"] < kids["blur3"]


def test_reference_stats_give_the_same_fid(assets, self_run):
    _, stats = self_run
    gen = _variant(assets, "noise32", lambda im: noisy(im, 32, np.random.default_rng(1)))
    from_dir = _run(assets, "d.json", "--reference_dir", assets["ref"], gen=gen)
    from_stats = _run(assets, "s.json", "--reference_stats", stats, gen=gen)
    assert from_stats["fid"] == pytest.approx(from_dir["fid"], rel=1e-6, abs=1e-9)
    assert from_stats["kid"] == pytest.approx(from_dir["kid"], rel=1e-6) and from_stats["kid"] != 0
    assert from_stats["kid_std"] == pytest.approx(from_dir["kid_std"], rel=1e-6, abs=1e-12)
    assert [w for w in from_stats["warnings"] if "not verified" not in w] == []  # another tool's images
    with np.load(stats) as data:
        assert data["mu"].shape == (16,) and data["sigma"].shape == (16, 16) and int(data["num_images"]) == N
        assert data["features"].shape == (N, 16)
    # statistics without our metadata (e.g. from pytorch-fid / clean-fid): accepted with a warning
    foreign = assets["dir"] / "foreign.npz"
    with np.load(stats) as data:
        np.savez(foreign, mu=data["mu"], sigma=data["sigma"])
    from_foreign = _run(assets, "f.json", "--reference_stats", str(foreign), gen=gen)
    assert from_foreign["fid"] == pytest.approx(from_dir["fid"], rel=1e-6, abs=1e-9)
    assert any("do not record" in w for w in from_foreign["warnings"])
    assert from_foreign["kid"] is None and any("hold no features: no KID" in w for w in from_foreign["warnings"])


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_is_torchmetrics_kid_of_the_images(assets, self_run):
    """KID from the features shared with FID equals torchmetrics' KID run on the images themselves
    (same network, same subsets: the seed is fixed), and a rerun gives the same value."""
    from torchmetrics.image.kid import KernelInceptionDistance

    from evaluation import fid as fidlib
    from evaluation import images as im
    from evaluation.weights import load_inception

    # 12 generated images against 24 references: subsets of 12, drawn at random on the reference side
    gen = str(assets["dir"] / "kid_gen")
    if not os.path.isdir(gen):
        write_generated(gen, [noisy(b, 8, np.random.default_rng(1)) for b in assets["base"][:12]], assets["ids"][:12],
                        assets["seeds"][:12])
    ours = _run(assets, "kid.json", "--reference_dir", assets["ref"], gen=gen)
    assert ours["kid_subset_size"] == 12 and ours["kid_std"] > 0
    assert _run(assets, "kid2.json", "--reference_dir", assets["ref"], gen=gen)["kid"] == ours["kid"]
    kid = KernelInceptionDistance(feature=fidlib.InceptionFeatures(load_inception(assets["inception"])),
                                  subset_size=12, reset_real_features=False)
    to_tensor = lambda folder: torch.stack([im.inception_input(im.load_rgb(os.path.join(folder, n)))
                                            for n in sorted(os.listdir(folder)) if n.endswith(".png")])
    kid.update(to_tensor(assets["ref"]), real=True)
    kid.update(to_tensor(gen), real=False)
    torch.manual_seed(fidlib.KID_SEED)
    mean, std = kid.compute()
    assert ours["kid"] == pytest.approx(float(mean), rel=1e-6) and ours["kid_std"] == pytest.approx(float(std), rel=1e-5)


def test_the_protocol_is_recorded(assets, self_run, tmp_path):
    import hashlib

    long_prompts = ["x" * 100, "a " * 80]  # the tiny tokenizer has no merges: one token per character
    ids = assets["ids"][:4]
    csv_path = tmp_path / "long.csv"
    write_prompts_csv(list(zip(ids, long_prompts + assets["prompts"][2:4])), str(csv_path))
    gen = tmp_path / "gen"
    write_generated(str(gen), assets["base"][:4], ids, assets["seeds"][:4])
    out = tmp_path / "m.json"
    assert metrics.main([*UNVERIFIED, str(gen), "--reference_dir", assets["ref"], "--prompts_csv",
                         str(csv_path), "--inception_weights", assets["inception"], "--clip_model", assets["clip"],
                         "--out", str(out), "--num_workers", "0", "--seed_start", "42"]) == 0
    protocol = json.loads(out.read_text())["protocol"]
    with open(assets["inception"], "rb") as f:
        assert protocol["fid"]["feature_network_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert protocol["fid"]["reference"]["dir"] == os.path.abspath(assets["ref"])
    assert protocol["fid"]["reference_images"] == N and protocol["fid"]["features"] == 16
    assert protocol["fid"]["resize"].startswith("centre crop to a square, then clean-fid 'clean' resize to 299x299")
    assert protocol["kid"]["subset_size"] == 4 and protocol["kid"]["subsets"] == 100  # min(1000, 24, 4)
    clip = protocol["clip"]
    assert clip["model"] == "clip" and clip["max_tokens"] == 77
    assert "shortest side to 32 px (PIL bicubic" in clip["resize"] and "centre crop 32x32" in clip["resize"]
    assert clip["score"].startswith("torchmetrics CLIPScore: 100 * cos(image, prompt)")
    assert (clip["prompts"], clip["prompts_over_max_tokens"]) == (4, 2)


def test_reference_stats_from_other_settings_are_refused(assets, self_run):
    _, stats = self_run
    with pytest.raises(EvaluationError, match="center_crop=True, this run uses False"):
        _run(assets, "x.json", "--reference_stats", stats, "--no_center_crop")
    other = save_tiny_inception(str(assets["dir"] / "other_inception.pt"), seed=1)
    args = [*UNVERIFIED, assets["gen"], "--reference_stats", stats, "--inception_weights", other, "--no_clip",
            "--out", str(assets["dir"] / "y.json"), "--num_workers", "0"]
    with pytest.raises(EvaluationError, match="computed with inception_sha256="):
        metrics.main(args)


def test_reference_list_selects_reference_images(assets):
    refs = assets["dir"] / "refs.txt"
    refs.write_text("".join(f"ref_{i:03d}.png\n" for i in range(0, N, 2)))
    result = _run(assets, "list.json", "--reference_dir", assets["ref"], "--reference_list", str(refs))
    assert result["counts"]["reference_images"] == N // 2
    assert result["fid"] > 1e-3  # half of the references is not the same distribution
    refs.write_text("ref_000.png\nnot_there.jpg\n")
    with pytest.raises(EvaluationError, match="1 of 2 listed reference images missing.*not_there.jpg"):
        _run(assets, "list2.json", "--reference_dir", assets["ref"], "--reference_list", str(refs))


def _direct_clip_score(clip_dir, image_paths, prompts):
    """CLIP score computed straight with transformers: max(mean(100 * cos), 0)."""
    from PIL import Image
    from transformers import AutoTokenizer, CLIPModel

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
    processor = ImageProcessor.from_pretrained(clip_dir, local_files_only=True)
    images = [Image.open(p).convert("RGB") for p in image_paths]
    with torch.no_grad():
        img = model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"])
        tok = tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        txt = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    return max(float(100 * cos.mean()), 0.0)


def test_clip_score_uses_the_right_prompt_per_image(assets):
    result = _run(assets, "clip.json", clip=True, fid=False)
    score = result["clip_score"]
    assert 0.0 <= score <= 100.0
    assert result["fid"] is None
    paths = [os.path.join(assets["gen"], f"{i}_seed{s}.png") for i, s in zip(assets["ids"], assets["seeds"])]
    expected = _direct_clip_score(assets["clip"], paths, assets["prompts"])
    assert expected > 0, "tiny CLIP gives a clamped score; choose another seed in save_tiny_clip"
    assert score == pytest.approx(expected, abs=1e-3)
    wrong = _direct_clip_score(assets["clip"], paths, assets["prompts"][::-1])
    assert abs(wrong - score) > 1e-2  # the pairing matters, so the match above checks it


def test_clip_score_with_several_captions_per_image(assets, tmp_path):
    # --all_captions CSV: image ids repeat; row i is generated with seed 42 + i
    ids = ["7", "7", "7", "9", "9"]
    prompts = ["a red square", "a square that is red", "red box", "blue sky", "the sky, blue"]
    csv_path = tmp_path / "all.csv"
    write_prompts_csv(list(zip(ids, prompts)), str(csv_path))
    gen = tmp_path / "gen"
    write_generated(str(gen), assets["base"][:5], ids, [42 + i for i in range(5)])
    out = tmp_path / "m.json"
    # A folder another tool made (no settings record): its seed_start is given.
    assert metrics.main([*UNVERIFIED, str(gen), "--prompts_csv", str(csv_path), "--clip_model", assets["clip"],
                         "--no_fid", "--out", str(out), "--num_workers", "2", "--batch_size", "2",
                         "--seed_start", "42"]) == 0
    score = json.loads(out.read_text())["clip_score"]
    paths = [str(gen / f"{i}_seed{42 + k}.png") for k, i in enumerate(ids)]
    assert score == pytest.approx(_direct_clip_score(assets["clip"], paths, prompts), abs=1e-3)
    # Without it, and without a record, the repeated ids cannot be told apart: said so.
    with pytest.raises(EvaluationError, match="no generation_settings.json there: pass --seed_start"):
        metrics.main([*UNVERIFIED, str(gen), "--prompts_csv", str(csv_path), "--clip_model", assets["clip"],
                      "--no_fid", "--out", str(out), "--num_workers", "0"])
    # with another seed_start the rows no longer match and the ids are ambiguous -> clear error
    with pytest.raises(EvaluationError, match="5 of 5 generated images have no prompt"):
        metrics.main([*UNVERIFIED, str(gen), "--prompts_csv", str(csv_path), "--clip_model", assets["clip"],
                      "--no_fid", "--out", str(out), "--num_workers", "0", "--seed_start", "0"])


def test_the_folders_recorded_seed_start_and_any_csv_submit_py_reads(assets, tmp_path):
    """No second default seed: a folder made with --seed_start 7 is scored without repeating 7; and an
    id,caption CSV (which submit.py accepts) is read the same way here."""
    ids = ["7", "7", "7", "9", "9"]
    prompts = ["a red square", "a square that is red", "red box", "blue sky", "the sky, blue"]
    csv_path = tmp_path / "coco.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("id", "caption"), *zip(ids, prompts)])
    gen = tmp_path / "gen"
    write_generated(str(gen), assets["base"][:5], ids, [7 + i for i in range(5)])
    (gen / "generation_settings.json").write_text(json.dumps({"settings": {"seed_start": 7}}))
    out = tmp_path / "m.json"
    assert metrics.main([*UNVERIFIED, str(gen), "--prompts_csv", str(csv_path), "--clip_model", assets["clip"],
                         "--no_fid", "--out", str(out), "--num_workers", "0"]) == 0
    result = json.loads(out.read_text())
    paths = [str(gen / f"{i}_seed{7 + k}.png") for k, i in enumerate(ids)]
    assert result["clip_score"] == pytest.approx(_direct_clip_score(assets["clip"], paths, prompts), abs=1e-3)
    assert result["settings"]["seed_start"] == 7


def test_clip_preprocess_can_go_to_worker_processes(assets):
    # DataLoader workers started with spawn/forkserver (Python >= 3.14 default) get the transform pickled
    from evaluation.clip_score import ClipImagePreprocess
    from evaluation.weights import load_clip

    _, _, image_processor = load_clip(assets["clip"])
    restored = pickle.loads(pickle.dumps(ClipImagePreprocess(image_processor)))
    assert restored(assets["base"][0]).shape == (3, 32, 32)


def test_missing_inception_weights(assets, tmp_path):
    with pytest.raises(EvaluationError, match=r"Inception weights not found: .*inception-2015-12-05\.pt .*"
                                              r"https://nvlabs-fi-cdn\.nvidia\.com/.*inception-2015-12-05\.pt"):
        metrics.main([*UNVERIFIED, assets["gen"], "--reference_dir", assets["ref"], "--no_clip",
                      "--inception_weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.json")])
    state_dict = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"w": torch.zeros(2)}, state_dict)
    with pytest.raises(EvaluationError, match="is not a TorchScript file"):
        metrics.main([*UNVERIFIED, assets["gen"], "--reference_dir", assets["ref"], "--no_clip",
                      "--inception_weights", str(state_dict), "--out", str(tmp_path / "m.json")])


def test_missing_clip_model(assets, tmp_path):
    with pytest.raises(EvaluationError, match="CLIP model folder not found .*openai/clip-vit-large-patch14"):
        metrics.main([*UNVERIFIED, assets["gen"], "--prompts_csv", assets["csv"], "--no_fid",
                      "--clip_model", str(tmp_path / "noclip"), "--out", str(tmp_path / "m.json")])


def test_cli_missing_weights_is_one_line_and_writes_nothing(assets, tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.metrics", *UNVERIFIED, assets["gen"], "--reference_dir", assets["ref"],
         "--prompts_csv", assets["csv"], "--inception_weights", str(tmp_path / "missing.pt"),
         "--clip_model", assets["clip"], "--out", str(out)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Inception weights not found")
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--no_fid", "--no_clip"], "nothing to compute"),
        (["--no_clip"], "FID needs --reference_dir or --reference_stats"),
        (["--no_fid"], "CLIP score needs --prompts_csv"),
    ],
)
def test_argument_errors(assets, tmp_path, extra, message):
    with pytest.raises(EvaluationError, match=message):
        metrics.main([*UNVERIFIED, assets["gen"], "--out", str(tmp_path / "m.json"), *extra])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_gpu(assets, tmp_path):
    with pytest.raises(EvaluationError, match="--device cuda"):
        metrics.main([*UNVERIFIED, assets["gen"], "--reference_dir", assets["ref"], "--no_clip", "--device", "cuda",
                      "--inception_weights", assets["inception"], "--out", str(tmp_path / "m.json")])


def test_empty_generated_folder(assets, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(os.path.join(assets["gen"], "notes.txt"), empty)
    with pytest.raises(EvaluationError, match="no .*_seed.*png images directly in"):
        metrics.main([*UNVERIFIED, str(empty), "--reference_dir", assets["ref"], "--no_clip",
                      "--inception_weights", assets["inception"], "--out", str(tmp_path / "m.json")])


def test_several_images_per_prompt_each_scored_against_its_prompt(assets, tmp_path):
    """A folder of K=2 images per prompt (sample i = row * K + k, seed 42 + i): the manifest names each
    image's prompt; only its file_name and prompt columns are read (an extra column such as k is fine)."""
    prompts = ["a red square", "blue sky", "green grass"]
    gen = tmp_path / "gen"
    samples = [(row * 2 + k, row, k) for row in range(3) for k in range(2)]
    write_generated(str(gen), assets["base"][:6], [str(row) for _, row, _ in samples], [42 + i for i, _, _ in samples])
    with open(gen / "manifest.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "image_id", "seed", "file_name", "prompt", "k"])
        writer.writerows([(i, str(row), 42 + i, f"{row}_seed{42 + i}.png", prompts[row], k) for i, row, k in samples])
    out = tmp_path / "m.json"
    assert metrics.main([*UNVERIFIED, str(gen), "--clip_model", assets["clip"], "--no_fid", "--out", str(out),
                         "--num_workers", "0", "--seed_start", "42"]) == 0
    result = json.loads(out.read_text())
    paths = [str(gen / f"{row}_seed{42 + i}.png") for i, row, _ in samples]
    expected = _direct_clip_score(assets["clip"], paths, [prompts[row] for _, row, _ in samples])
    assert result["clip_score"] == pytest.approx(expected, abs=1e-3)
    assert result["protocol"]["clip"]["prompts"] == 3  # distinct prompts


def _folder_with_manifest(assets, folder, present):
    """A folder whose manifest lists 8 samples, of which only the first `present` images are there."""
    ids, seeds = assets["ids"][:8], assets["seeds"][:8]
    write_generated(str(folder), assets["base"][:present], ids[:present], seeds[:present])
    with open(folder / "manifest.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "image_id", "seed", "file_name", "prompt"])
        writer.writerows([(i, ids[i], seeds[i], f"{ids[i]}_seed{seeds[i]}.png", assets["prompts"][i]) for i in range(8)])
    return str(folder)


def test_a_folder_with_missing_images_is_refused_unless_allowed(assets, tmp_path):
    gen = _folder_with_manifest(assets, tmp_path / "gen", 6)
    out = tmp_path / "m.json"
    args = [*UNVERIFIED, gen, "--reference_dir", assets["ref"], "--inception_weights", assets["inception"],
            "--no_clip", "--out", str(out), "--device", "cpu", "--num_workers", "0"]
    with pytest.raises(EvaluationError, match=r"gen: 2 of the 8 images its manifest lists are missing .*"
                                              r"1006_seed48.png.*--allow_incomplete") as err:
        metrics.main(args)
    assert "\n" not in str(err.value) and not out.exists()
    assert metrics.main([*args, "--allow_incomplete"]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["allow_incomplete"] is True
    assert result["counts"]["generated_images"] == 6 and result["counts"]["missing_images"] == 2
    assert any("2 of the 8 images" in w for w in result["warnings"])
    complete = _folder_with_manifest(assets, tmp_path / "complete", 8)
    assert metrics.main([*args[:2], complete, *args[3:]]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["allow_incomplete"] is False and result["counts"]["missing_images"] == 0
