"""The per-image scores of one scored folder, kept next to its images so that two configurations can be
compared image by image later (``python -m evaluation.compare``).

    FOLDER/scores.csv    one row per scored image: file, image_id, prompt_row, seed, then one column per
                         per-image score (clip_score, pickscore, hps, imagereward); empty where a score was not computed
    FOLDER/scores.json   the folder's set-level scores (fid, kid, kid_std, cmmd, their seed-set mean and std
                         when the folder is one seed set of a sweep) and the metrics.json they belong to

Neither is an image, so the metrics and FID tools that glob ``*.png`` never read them as one.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

from evaluation.errors import EvaluationError, read_json_file
from gen_worker.atomic_files import replace_file, replace_json

SCORES_FILE = "scores.csv"
SUMMARY_FILE = "scores.json"
KEY_COLUMNS = ("file", "image_id", "prompt_row", "seed")
# per-image columns of evaluation/preference.py's scorers, with their names in words
PREFERENCE_TITLES = {"pickscore": "PickScore", "hps": "HPS v2.1", "imagereward": "ImageReward"}
PREFERENCE_SCORES = tuple(PREFERENCE_TITLES)


def write_scores(folder: str, rows: Sequence[dict[str, Any]], score_columns: Sequence[str],
                 summary: dict[str, Any]) -> str:
    """Write FOLDER/scores.csv (the rows, in the given order) and FOLDER/scores.json; returns the csv path."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*KEY_COLUMNS, *score_columns])
    for row in rows:
        writer.writerow([("" if row.get(k) is None else row[k]) for k in KEY_COLUMNS]
                        + [("" if row.get(c) is None else repr(float(row[c]))) for c in score_columns])
    path = os.path.join(folder, SCORES_FILE)
    replace_file(path, buf.getvalue().encode("utf-8"))
    replace_json(os.path.join(folder, SUMMARY_FILE), summary)
    return path


def read_scores(folder: str) -> tuple[dict[str, dict[str, float | None]], list[str], dict[str, Any]]:
    """``(file -> {score column -> value or None}, score columns, summary)`` of a scored folder."""
    path = os.path.join(folder, SCORES_FILE)
    if not os.path.isfile(path):
        raise EvaluationError(f"no per-image scores in {folder} ({SCORES_FILE}): score it with "
                              f"python -m evaluation.metrics first")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:len(KEY_COLUMNS)]) != KEY_COLUMNS:
            raise EvaluationError(f"{path} is not a scores file written by evaluation.metrics (header {header})")
        columns = header[len(KEY_COLUMNS):]
        scores = {}
        for line in reader:
            values = line[len(KEY_COLUMNS):]
            scores[line[0]] = {c: (float(v) if v != "" else None) for c, v in zip(columns, values)}
    summary = read_json_file(os.path.join(folder, SUMMARY_FILE), "scores summary") \
        if os.path.isfile(os.path.join(folder, SUMMARY_FILE)) else {}
    return scores, columns, summary


