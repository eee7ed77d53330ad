"""Prompt files in the formats benchmarks ship: CSV, TSV, JSONL, Parquet (no model needed)."""
import csv
import json

import pyarrow
import pyarrow.parquet
import pytest

from gen_worker.output.record import read_manifest
from gen_worker.output.prepare import check_and_write_manifest
from gen_worker.prompts import PromptsError, fingerprint, load_samples, prompts_format, read_rows

GENEVAL = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "two_object", "include": [{"class": "cow", "count": 1}, {"class": "car", "count": 1}],
     "prompt": "a photo of a cow and a car"},
]


def _jsonl(path, objects):
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return str(path)


def _parquet(path, columns):
    pyarrow.parquet.write_table(pyarrow.table(columns), str(path))
    return str(path)


def test_partiprompts_tsv_with_its_capitalised_prompt_column(tmp_path):
    path = tmp_path / "PartiPrompts.tsv"
    path.write_text("Prompt\tCategory\tChallenge\tNote\nbond, james bond\tPeople\tBasic\t\n"
                    "a \"quoted\" owl\tAnimals\tImagination\tfrom DrawBench\n", encoding="utf-8")
    samples = load_samples(str(path), 0)
    assert [(s.image_id, s.prompt) for s in samples] == [("0", "bond, james bond"), ("1", 'a "quoted" owl')]
    assert samples[1].extra == (("Category", "Animals"), ("Challenge", "Imagination"), ("Note", "from DrawBench"))


def test_geneval_jsonl_keeps_every_other_field_in_the_manifest(tmp_path):
    path = _jsonl(tmp_path / "evaluation_metadata.jsonl", GENEVAL)
    samples = load_samples(path, 42)
    assert [(s.index, s.image_id, s.prompt, s.seed) for s in samples] == [
        (0, "0", "a photo of a bench", 42), (1, "1", "a photo of a cow and a car", 43)]
    assert [json.loads(s.metadata) for s in samples] == GENEVAL
    out = tmp_path / "out"
    out.mkdir()
    check_and_write_manifest(str(out), samples)
    rows = read_manifest(str(out))
    assert rows[1]["tag"] == "two_object"
    assert json.loads(rows[1]["include"]) == GENEVAL[1]["include"]  # nested values JSON-encoded


def test_a_column_named_like_a_manifest_column_keeps_its_value_under_a_prefix(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "seed": 7, "file_name": "x"}])
    out = tmp_path / "out"
    out.mkdir()
    check_and_write_manifest(str(out), load_samples(path, 42))
    with open(out / "manifest.csv", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert (row["seed"], row["extra_seed"], row["extra_file_name"]) == ("42", "7", "x")


def test_parquet_ids_keep_their_text_and_integers_become_digits(tmp_path):
    path = _parquet(tmp_path / "p.parquet", {"id": [7, 12], "caption": ["a cat", "a dog"],
                                             "labels": [["cat"], ["dog", "ball"]], "score": [0.5, None]})
    samples = load_samples(path, 0)
    assert [(s.image_id, s.file_name) for s in samples] == [("7", "000007_seed0.png"), ("12", "000012_seed1.png")]
    assert dict(samples[1].extra) == {"labels": '["dog", "ball"]', "score": ""}
    text_ids = _parquet(tmp_path / "t.parquet", {"image_id": ["007", "x"], "prompt": ["a", "b"]})
    assert [s.image_id for s in load_samples(text_ids, 0)] == ["007", "x"]


def test_the_format_comes_from_the_extension_or_the_flag(tmp_path):
    assert [prompts_format(f"p{e}") for e in (".csv", ".TSV", ".jsonl", ".parquet", ".txt")] == [
        "csv", "tsv", "jsonl", "parquet", "csv"]
    path = _jsonl(tmp_path / "prompts.txt", GENEVAL)
    assert [s.prompt for s in load_samples(path, 0, prompts_format="jsonl")] == [o["prompt"] for o in GENEVAL]
    with pytest.raises(PromptsError, match="no prompt column"):
        load_samples(path, 0)  # read as CSV, its header is JSON


@pytest.mark.parametrize("name, content, message", [
    ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b",\n', r"line 2 is not valid JSON"),
    ("p.jsonl", '{"prompt": "a"}\n["b"]\n', r"line 2 is not a JSON object"),
    ("p.jsonl", '{"prompt": "a"}\n\n{"tag": "x"}\n', r"line 3 has no 'prompt' value"),
    ("p.jsonl", '{"prompt": "a"}\n{"prompt": 3}\n', r"prompt in data row 1 \(line 2\) is not text"),
    ("p.jsonl", '{"prompt": "a"}\n{"prompt": " "}\n', r"empty prompt in data row 1 \(line 2\)"),
    ("p.jsonl", '{"prompt": null}\n', r"empty prompt in data row 0 \(line 1\)"),
    ("p.jsonl", '{"id": 1.5, "prompt": "a"}\n', r"id in line 1 is 1.5; ids must be text or integers"),
    ("p.jsonl", '{"id": "", "prompt": "a"}\n', r"empty id in data row 0"),
    ("p.jsonl", '{"id": 1, "prompt": "a"}\n{"id": "000001", "prompt": "b"}\n', "map to the same file name"),
    ("p.jsonl", "\n\n", r"prompts JSONL is empty"),
    ("p.jsonl", '{"caption_en": "a"}\n', r"no prompt column"),
    ("p.tsv", "", r"prompts TSV is empty"),
    ("p.tsv", "id\tprompt\n", r"prompts TSV has a header but no data rows"),
    ("p.tsv", "id\tprompt\n1\n", r"line 2 has no 'prompt' value"),
    ("p.csv", "prompt,id,prompt\na,1,b\n", r"column 'prompt' appears more than once"),
    ("p.parquet", "not parquet at all", r"not a readable Parquet file"),
    # a JSON escape of half a surrogate pair is no character: no text file or PNG chunk can hold it
    ("p.jsonl", '{"prompt": "a"}\n{"prompt": "caf\\ud800"}\n', r"line 2 holds a lone surrogate \('\\ud800'\)"),
    ("p.jsonl", '{"id": "\\udfff", "prompt": "a"}\n', r"line 1 holds a lone surrogate"),
    ("p.jsonl", '{"prompt": "a", "tag": ["x", "\\ud83d"]}\n', r"line 1 holds a lone surrogate"),
    ("p.jsonl", '{"prompt": "a", "\\ud800": 1}\n', r"line 1 holds a lone surrogate"),
    ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b", "tag": 1, "prompt": "c"}\n', r"line 2 gives the key 'prompt' twice"),
    ("p.jsonl", '{"prompt": "a", "include": [{"count": 1, "count": 2}]}\n', r"line 1 gives the key 'count' twice"),
])
def test_bad_prompt_files_are_refused_in_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptsError, match=message) as err:
        load_samples(str(path), 0)
    assert "\n" not in str(err.value)


def test_bad_parquet_cells_and_missing_files(tmp_path):
    floats = _parquet(tmp_path / "f.parquet", {"id": [1.0], "prompt": ["a"]})
    with pytest.raises(PromptsError, match=r"id in row 0 is 1.0; ids must be text or integers"):
        load_samples(floats, 0)
    missing = _parquet(tmp_path / "m.parquet", {"id": ["1", None], "prompt": ["a", "b"]})
    with pytest.raises(PromptsError, match=r"empty id in data row 1 \(row 1\)"):
        load_samples(missing, 0)
    for name, kind in (("x.jsonl", "JSONL"), ("x.tsv", "TSV"), ("x.parquet", "Parquet")):
        with pytest.raises(PromptsError, match=f"prompts {kind} not found"):
            read_rows(str(tmp_path / name))
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(PromptsError, match="not valid UTF-8"):
        load_samples(str(tmp_path / "latin1.jsonl"), 0)


def test_a_surrogate_pair_is_one_character(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a \\ud83d\\ude00"}\n', encoding="utf-8")
    assert load_samples(str(path), 0)[0].prompt == "a \U0001F600"


def _invalid_utf8_parquet(path):
    # pyarrow refuses to make such a column from Python; its buffers can hold any bytes
    offsets = pyarrow.py_buffer(b"\0\0\0\0\4\0\0\0")
    column = pyarrow.Array.from_buffers(pyarrow.string(), 1, [None, offsets, pyarrow.py_buffer(b"caf\xe9")])
    pyarrow.parquet.write_table(pyarrow.table({"prompt": column}), str(path))


@pytest.mark.parametrize("name", ["p.csv", "p.tsv", "p.jsonl", "p.parquet"])
def test_invalid_utf8_is_refused_in_every_format(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        _invalid_utf8_parquet(path)
    else:
        path.write_bytes({"p.csv": b"prompt\ncaf\xe9\n", "p.tsv": b"id\tprompt\n1\tcaf\xe9\n",
                          "p.jsonl": b'{"prompt": "caf\xe9"}\n'}[name])
    with pytest.raises(PromptsError, match="not valid UTF-8") as err:
        load_samples(str(path), 0)
    assert "\n" not in str(err.value)


def _strict_json(text):
    return json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} is not JSON: {text}"))


def test_nan_and_infinity_in_other_columns_are_written_as_json_null(tmp_path):
    parquet = _parquet(tmp_path / "p.parquet", {"prompt": ["a", "b"], "score": [float("nan"), 1.5],
                                                "scores": [[float("inf"), 1.0], [2.0]]})
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a", "score": NaN, "scores": [Infinity, 1.0]}\n{"prompt": "b", "score": 1.5, '
                     '"scores": [2.0]}\n', encoding="utf-8")
    for path in (parquet, str(jsonl)):
        samples = load_samples(path, 0)
        # GenEval's metadata.jsonl is each sample's metadata line: JSON, as its reader expects
        assert [_strict_json(s.metadata) for s in samples] == [
            {"prompt": "a", "score": None, "scores": [None, 1.0]}, {"prompt": "b", "score": 1.5, "scores": [2.0]}]
        assert [dict(s.extra) for s in samples] == [{"score": "", "scores": "[null, 1.0]"},
                                                    {"score": "1.5", "scores": "[2.0]"}]


def test_the_fingerprint_covers_the_fields_kept_in_the_manifest(tmp_path):
    a = load_samples(_jsonl(tmp_path / "a.jsonl", GENEVAL), 0)
    changed = [dict(GENEVAL[0], tag="colors"), GENEVAL[1]]
    b = load_samples(_jsonl(tmp_path / "b.jsonl", changed), 0)
    assert [s.prompt for s in a] == [s.prompt for s in b]
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(load_samples(str(tmp_path / "a.jsonl"), 0))


def test_submit_flags_reach_the_samples_and_the_spec(tmp_path, tiny_sd):
    from gen_worker.cli import build_parser
    from gen_worker.plan import build_spec
    from gen_worker.spec import spec_samples
    path = _jsonl(tmp_path / "prompts.txt", GENEVAL)
    args = build_parser().parse_args(["--prompts_csv", path, "--prompts_format", "jsonl", "--images_per_prompt", "3",
                                      "--layout", "geneval", "--output_dir", str(tmp_path / "out"),
                                      "--model_path", tiny_sd, "--device", "cpu"])
    spec, samples = build_spec(args)
    assert (spec.num_samples, spec.images_per_prompt, spec.layout, spec.prompts_format) == (6, 3, "geneval", "jsonl")
    assert [s.file_name for s in samples][:4] == ["00000/samples/0000.png", "00000/samples/0001.png",
                                                  "00000/samples/0002.png", "00001/samples/0000.png"]
    assert spec_samples(spec) == samples and fingerprint(samples) == spec.samples_fingerprint
    assert {"images_per_prompt": 3, "layout": "geneval"}.items() <= spec.recorded_settings().items()
