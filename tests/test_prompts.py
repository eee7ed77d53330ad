import pytest

from conftest import write_prompts
from gen_worker.naming import file_stem, image_name
from gen_worker.prompts import PromptsError, fingerprint, load_samples, read_rows


def test_samples_follow_rows_and_seeds(tmp_path):
    path = write_prompts(tmp_path / "p.csv", [("7", "a"), ("7", "b"), ("x12", "c")])
    samples = load_samples(path, seed_start=42)
    assert [(s.index, s.image_id, s.seed, s.file_name) for s in samples] == [
        (0, "7", 42, "000007_seed42.png"), (1, "7", 43, "000007_seed43.png"), (2, "x12", 44, "x12_seed44.png")]
    assert len(load_samples(path, seed_start=0, num_samples=2)) == 2


def test_quoted_fields_unicode_and_bom(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('\ufeffid,caption\n00012,"commas, ""quotes""\nand a newline"\n3,日本語 ✓ émoji 🐱\n',
                    encoding="utf-8")
    samples = load_samples(str(path), seed_start=1)
    assert samples[0].image_id == "00012" and samples[0].file_name == "000012_seed1.png"
    assert samples[0].prompt == 'commas, "quotes"\nand a newline'
    assert samples[1].prompt == "日本語 ✓ émoji 🐱"


def test_column_detection_and_override(tmp_path):
    path = write_prompts(tmp_path / "p.csv", [("a", "b", "c")], header=("Text", "key", "other"))
    id_col, prompt_col, rows = read_rows(str(path))
    assert (id_col, prompt_col, [r[:2] for r in rows]) == (None, "Text", [("0", "a")])
    assert rows[0].fields == {"Text": "a", "key": "b", "other": "c"}
    id_col, prompt_col, rows = read_rows(str(path), id_column="key", prompt_column="other")
    assert [r[:2] for r in rows] == [("b", "c")]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("image_id,prompt\n", "no data rows"),
    ("image_id,prompt\n1,hello\n2,   \n", "empty prompt in data row 1"),
    ("image_id,caption_en\n1,hello\n", "no prompt column"),
    ("image_id,prompt\n,hello\n", "empty image_id in data row 0"),
    ("image_id,prompt\n1,a\n000001,b\n", "map to the same file name"),
])
def test_bad_csv_is_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "p.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptsError, match=message):
        load_samples(str(path), seed_start=0)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(PromptsError, match="not found"):
        load_samples(str(tmp_path / "missing.csv"), 0)
    (tmp_path / "latin1.csv").write_bytes("image_id,prompt\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptsError, match="not valid UTF-8"):
        load_samples(str(tmp_path / "latin1.csv"), 0)
    with pytest.raises(PromptsError, match="more than the 1 prompts"):
        load_samples(write_prompts(tmp_path / "p.csv", [("1", "a")]), 0, num_samples=2)
    with pytest.raises(PromptsError, match="named column|no column 'nope'"):
        load_samples(write_prompts(tmp_path / "q.csv", [("1", "a")]), 0, prompt_column="nope")


@pytest.mark.parametrize("raw", ["../../etc/passwd", "a/b", "a\\b", "..", ".hidden", "x\x00y\x1b",
                                 "tab\tid", "日本", " 1", "²", "-", "a" * 300])
def test_unsafe_ids_become_safe_distinct_stems(raw):
    stem = file_stem(raw)
    assert stem == file_stem(raw)  # deterministic
    assert "/" not in stem and "\\" not in stem and ".." not in stem and not stem.startswith(".")
    assert stem.isascii() and stem.isprintable() and 0 < len(stem) <= 100
    assert file_stem(raw + "x") != stem


def test_safe_ids_are_kept_and_numbers_padded():
    assert file_stem("1") == "000001"
    assert file_stem("1234567") == "1234567"
    assert file_stem("COCO_val2014_000000000042") == "COCO_val2014_000000000042"
    assert image_name(file_stem("42"), 7) == "000042_seed7.png"
    with pytest.raises(ValueError):
        file_stem("   ")


def test_fingerprint_changes_with_any_prompt(tmp_path):
    a = load_samples(write_prompts(tmp_path / "a.csv", [("1", "a"), ("2", "b")]), 0)
    b = load_samples(write_prompts(tmp_path / "b.csv", [("1", "a"), ("2", "c")]), 0)
    assert fingerprint(a) == fingerprint(load_samples(str(tmp_path / "a.csv"), 0))
    assert fingerprint(a) != fingerprint(b)


def test_1_and_1_0_collide_like_7_and_007(tmp_path):
    path = write_prompts(tmp_path / "p.csv", [("1", "a"), ("1.0", "b")])
    with pytest.raises(PromptsError, match="map to the same file name"):
        load_samples(path, 0)
    alone = load_samples(write_prompts(tmp_path / "q.csv", [("1.0", "a"), ("2.50", "b")]), 0)
    assert [s.file_name for s in alone] == ["000001_seed0.png", "2.50_seed1.png"]
