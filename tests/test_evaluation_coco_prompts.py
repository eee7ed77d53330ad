import csv
import json
import os
import subprocess
import sys

import pytest

from evaluation import coco_prompts as cp
from evaluation.errors import EvaluationError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRICKY = 'A "quoted" cat, on a mat;\nwith  a newline\tand tab — café 猫 🐱'


def _coco():
    # ids deliberately out of order; image 30 has no caption; image 20 has captions in reverse id order
    return {
        "info": {"description": "tiny"},
        "images": [
            {"id": 30, "file_name": "COCO_val2014_000000000030.jpg", "width": 64, "height": 64},
            {"id": 10, "file_name": "COCO_val2014_000000000010.jpg", "width": 64, "height": 64},
            {"id": 20, "file_name": "COCO_val2014_000000000020.jpg", "width": 64, "height": 64},
            {"id": 5, "file_name": "COCO_val2014_000000000005.jpg", "width": 64, "height": 64},
        ],
        "annotations": [
            {"image_id": 20, "id": 202, "caption": "  second of twenty  "},
            {"image_id": 20, "id": 201, "caption": "first of twenty"},
            {"image_id": 10, "id": 101, "caption": TRICKY},
            {"image_id": 10, "id": 100, "caption": "Ten, with a comma."},
            {"image_id": 5, "id": 51, "caption": "five"},
            {"image_id": 5, "id": 50, "caption": "   \n "},  # empty after normalisation
        ],
    }


@pytest.fixture
def captions_file(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(_coco(), ensure_ascii=False), encoding="utf-8")
    return str(path)


def _read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_normalize_caption():
    assert cp.normalize_caption("  a\n b\t\tc\u00a0d  ") == "a b c d"


def test_one_per_image_default(tmp_path, captions_file):
    out = tmp_path / "prompts.csv"
    assert cp.main(["--captions", captions_file, "--out", str(out)]) == 0
    rows = _read_csv(out)
    assert rows[0] == ["image_id", "prompt"]
    # sorted by image id; first caption by annotation id; empty caption of image 5 skipped; image 30 not eligible
    assert rows[1:] == [["5", "five"], ["10", "Ten, with a comma."], ["20", "first of twenty"]]


def test_all_captions_and_quoting(tmp_path, captions_file):
    out = tmp_path / "prompts.csv"
    assert cp.main(["--captions", captions_file, "--out", str(out), "--all_captions"]) == 0
    rows = _read_csv(out)
    norm_tricky = 'A "quoted" cat, on a mat; with a newline and tab — café 猫 🐱'
    assert rows[1:] == [
        ["5", "five"],
        ["10", "Ten, with a comma."],
        ["10", norm_tricky],
        ["20", "first of twenty"],
        ["20", "second of twenty"],
    ]
    raw = out.read_bytes().decode("utf-8")
    assert '"A ""quoted"" cat, on a mat; with a newline and tab — café 猫 🐱"' in raw
    assert len(raw.splitlines()) == 6  # no newline survives inside a caption
    # the generator reads it to the same content
    from gen_worker.prompts import load_samples
    assert [(s.image_id, s.prompt) for s in load_samples(str(out), 42)] == [tuple(r) for r in rows[1:]]


def test_quoting_round_trip_of_unnormalised_text(tmp_path):
    # write_prompts_csv itself must survive commas, quotes, newlines and Unicode
    out = tmp_path / "p.csv"
    cp.write_prompts_csv([(1, TRICKY), (2, "plain")], str(out))
    assert _read_csv(out)[1:] == [["1", TRICKY], ["2", "plain"]]


def test_subset_is_deterministic_and_sorted(tmp_path):
    coco = {
        "images": [{"id": i, "file_name": f"img{i}.jpg"} for i in range(1, 51)],
        "annotations": [{"image_id": i, "id": 1000 + i, "caption": f"caption {i}"} for i in range(1, 51)],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    outs = []
    for k in range(2):
        out, refs = tmp_path / f"p{k}.csv", tmp_path / f"r{k}.txt"
        args = ["--captions", str(path), "--out", str(out), "--num_images", "7", "--seed", "3"]
        assert cp.main(args + ["--reference_list", str(refs)]) == 0
        outs.append((out.read_text(), refs.read_text()))
    assert outs[0] == outs[1]
    ids = [int(r[0]) for r in _read_csv(tmp_path / "p0.csv")[1:]]
    assert len(ids) == 7 and ids == sorted(ids)
    assert outs[0][1].splitlines() == [f"img{i}.jpg" for i in ids]
    other = cp.select_image_ids(list(range(1, 51)), 7, seed=4)
    assert other != ids  # another seed, another subset (fixed seeds, so this is deterministic)


def test_reference_list_and_images_dir(tmp_path, captions_file):
    images = tmp_path / "val2014"
    images.mkdir()
    for i in (5, 10, 20):
        (images / f"COCO_val2014_{i:012d}.jpg").write_bytes(b"x")
    refs = tmp_path / "refs.txt"
    args = ["--captions", captions_file, "--out", str(tmp_path / "p.csv"), "--reference_list", str(refs)]
    assert cp.main(args + ["--images_dir", str(images)]) == 0
    assert refs.read_text().splitlines() == [f"COCO_val2014_{i:012d}.jpg" for i in (5, 10, 20)]
    os.remove(images / "COCO_val2014_000000000010.jpg")
    with pytest.raises(EvaluationError, match="1 of 3 reference images missing.*000000000010"):
        cp.main(args + ["--images_dir", str(images)])


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "captions file not found"),
        ("{not json", "not valid JSON"),
        ('{"images": []}', "lacks key\\(s\\) 'annotations'"),
        ('{"images": [{"id": 1}], "annotations": []}', "images\\[0\\] lacks key\\(s\\) 'file_name'"),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "id": 2}]}',
            "annotations\\[0\\] lacks key\\(s\\) 'caption'",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 9, "id": 2, "caption": "x"}]}',
            "refers to image_id 9",
        ),
    ],
)
def test_input_errors(tmp_path, content, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(EvaluationError, match=message):
        cp.main(["--captions", str(path), "--out", str(tmp_path / "p.csv")])


def test_too_many_images(captions_file, tmp_path):
    with pytest.raises(EvaluationError, match="--num_images 4 is larger than the 3 images with captions"):
        cp.main(["--captions", captions_file, "--out", str(tmp_path / "p.csv"), "--num_images", "4"])


def test_cli_prints_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.coco_prompts", "--captions", str(tmp_path / "nope.json"), "--out", "x.csv"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: captions file not found: {tmp_path / 'nope.json'}"]
