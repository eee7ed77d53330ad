import pytest

from evaluation import generated as gen
from evaluation.coco_prompts import write_prompts_csv
from evaluation.errors import EvaluationError
from gen_worker.errors import T2IError
from gen_worker.naming import parse_image_name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("123_seed42.png", ("123", 42)),
        ("my_image_seed_x_seed7.png", ("my_image_seed_x", 7)),  # the last _seed<digits> wins
        ("a b_seed0.png", ("a b", 0)),
        ("123_seed42.PNG", None),
        ("123_seed42.png.tmp", None),
        ("123_seed42.tmp.png", None),
        (".123_seed42.png", None),
        ("123.png", None),
        ("_seed42.png", None),
        ("123_seedx.png", None),
    ],
)
def test_generated_names_are_parsed_with_the_generators_pattern(name, expected):
    assert parse_image_name(name) == expected


def test_list_generated_images_only_direct_pngs_sorted(tmp_path):
    for name in ["10_seed43.png", "9_seed44.png", "10_seed42.png", "abc_seed1.png", "grid.png", "x_seed1.jpg", ".h_seed1.png"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "5_seed42.png").write_bytes(b"")
    (tmp_path / "dir_seed3.png").mkdir()  # a folder with a matching name is not an image
    images, ignored = gen.list_generated_images(str(tmp_path))
    assert [(g.image_id, g.seed) for g in images] == [("9", 44), ("10", 42), ("10", 43), ("abc", 1)]
    assert sorted(ignored) == sorted([".h_seed1.png", "dir_seed3.png", "grid", "grid.png", "x_seed1.jpg"])
    with pytest.raises(EvaluationError, match="generated image folder not found"):
        gen.list_generated_images(str(tmp_path / "nope"))


def _img(image_id, seed):
    return gen.GeneratedImage(path=f"/x/{image_id}_seed{seed}.png", image_id=image_id, seed=seed)


def _rows(ids):
    return [gen.PromptRow(index=i, image_id=image_id, prompt=f"p{i}") for i, image_id in enumerate(ids)]


def test_match_row_by_seed_with_repeated_image_ids():
    rows = _rows(["7", "7", "7", "9", "9"])  # --all_captions: row i generated with seed 42 + i
    images = [_img("7", 42), _img("7", 43), _img("7", 44), _img("9", 45), _img("9", 46)]
    matched, unmatched = gen.match_prompts(images, rows, seed_start=42)
    assert [r.prompt for r in matched] == ["p0", "p1", "p2", "p3", "p4"]
    assert unmatched == []


def test_match_falls_back_to_unique_image_id():
    # several samples per prompt with seeds seed_start, seed_start + 1, ...: row by seed has another id
    rows = _rows(["1", "2", "3"])
    images = [_img("2", 42), _img("2", 43), _img("2", 44), _img("3", 42)]
    matched, unmatched = gen.match_prompts(images, rows, seed_start=42)
    assert [r.prompt for r in matched] == ["p1", "p1", "p1", "p2"]
    assert unmatched == []


def test_match_ambiguous_or_unknown_is_unmatched():
    rows = _rows(["7", "7", "9"])
    images = [_img("7", 100), _img("5", 42), _img("7", 43)]
    matched, unmatched = gen.match_prompts(images, rows, seed_start=42)
    assert matched[0] is None and matched[1] is None and matched[2].prompt == "p1"
    assert unmatched == images[:2]
    with pytest.raises(EvaluationError, match="2 of 3 generated images have no prompt.*7_seed100.png, 5_seed42.png"):
        gen.require_all_matched(unmatched, 3, 42)


def test_match_numeric_ids_ignore_leading_zeros():
    matched, _ = gen.match_prompts([_img("7", 42)], _rows(["007"]), seed_start=42)
    assert matched[0].prompt == "p0"
    # a generator that zero-pads numeric ids in file names (COCO 42 -> 000042_seed43.png)
    matched, unmatched = gen.match_prompts([_img("000042", 43), _img("000042", 44)], _rows(["41", "42", "42"]), 42)
    assert [r.prompt for r in matched] == ["p1", "p2"] and unmatched == []


def test_read_prompts_csv(tmp_path):
    path = tmp_path / "p.csv"
    write_prompts_csv([(1, 'a "b", c'), (2, "猫")], str(path))
    rows = gen.read_prompts_csv(str(path))
    assert [(r.index, r.image_id, r.prompt) for r in rows] == [(0, "1", 'a "b", c'), (1, "2", "猫")]
    # extra columns and a BOM are fine
    path.write_bytes("\ufeffimage_id,prompt,extra\n5,hello,x\n".encode("utf-8"))
    assert [(r.image_id, r.prompt) for r in gen.read_prompts_csv(str(path))] == [("5", "hello")]
    # read as submit.py reads it: the same column names, the same overrides
    path.write_text("id,caption\n1,a\n")
    assert [(r.image_id, r.prompt) for r in gen.read_prompts_csv(str(path))] == [("1", "a")]
    path.write_text("key,text_en\nk1,a\n")
    assert [(r.image_id, r.prompt) for r in gen.read_prompts_csv(str(path), "key", "text_en")] == [("k1", "a")]
    with pytest.raises(T2IError, match="no prompt column"):
        gen.read_prompts_csv(str(path))
    path.write_text("image_id,prompt\n")
    with pytest.raises(T2IError, match="no data rows"):
        gen.read_prompts_csv(str(path))
    with pytest.raises(T2IError, match="prompts CSV not found"):
        gen.read_prompts_csv(str(tmp_path / "nope.csv"))


def test_list_reference_images(tmp_path):
    for name in ["b.jpg", "a.JPEG", "c.png", "d.txt", ".e.jpg"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.jpg").write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in gen.list_reference_images(str(tmp_path))] == ["a.JPEG", "b.jpg", "c.png"]
    lst = tmp_path / "refs.txt"
    lst.write_text("c.png\n\nb.jpg\n")
    assert [p.rsplit("/", 1)[1] for p in gen.list_reference_images(str(tmp_path), str(lst))] == ["c.png", "b.jpg"]
    with pytest.raises(EvaluationError, match="reference image folder not found"):
        gen.list_reference_images(str(tmp_path / "nope"))


def test_manifest_of_the_output_folder_matches_renamed_ids_exactly(tmp_path):
    import csv

    from evaluation.generated import list_generated_images, match_prompts, read_manifest
    folder = tmp_path / "gen"
    folder.mkdir()
    # submit.py renames unsafe ids ("a/b" -> "a_b-<hash>"); the manifest maps the file back to its prompt.
    (folder / "a_b-0123456789_seed43.png").write_bytes(b"png")
    with open(folder / "manifest.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "image_id", "seed", "file_name", "prompt"])
        writer.writerow([1, "a/b", 43, "a_b-0123456789_seed43.png", "a cat, on a mat"])
    images, _ = list_generated_images(str(folder))
    matched, unmatched = match_prompts(images, [], 42, read_manifest(str(folder)))
    assert unmatched == [] and (matched[0].index, matched[0].image_id, matched[0].prompt) == (1, "a/b", "a cat, on a mat")
    assert match_prompts(images, [], 42)[1] == images  # without the manifest it cannot be matched
