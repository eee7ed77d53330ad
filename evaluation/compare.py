"""Compare two scored configurations of the same prompts and seeds, image by image.

Usage::

    python -m evaluation.compare A B [--out compare.json]

A and B are folders that ``python -m evaluation.metrics`` has scored (a run folder, or one configuration of a
sweep): their ``scores.csv`` hold the per-image scores. Images pair by file name (``{image_id}_seed{seed}.png``:
same prompt, same seed). For every per-image score both have: the mean of ``B - A`` over the pairs with its
bootstrap 95% interval (evaluation/uncertainty.py). For FID, KID and CMMD (one number per folder): ``B - A``,
and, when both folders are seed sets of a sweep over seed_start, the difference of their seed-set means with
the std of that difference, ``sqrt(std_A^2 + std_B^2)``.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, Sequence

from evaluation.errors import EvaluationError, run_cli
from evaluation.scores_file import read_scores
from evaluation.uncertainty import paired_difference, protocol

SET_LEVEL = ("fid", "kid", "cmmd")


def compare(folder_a: str, folder_b: str) -> dict[str, Any]:
    scores_a, columns_a, summary_a = read_scores(folder_a)
    scores_b, columns_b, summary_b = read_scores(folder_b)
    pairs = sorted(set(scores_a) & set(scores_b))
    if not pairs:
        raise EvaluationError(f"{folder_a} and {folder_b} have no image of the same file name (same prompt and "
                              f"seed) in common: nothing to pair")
    per_image = {}
    for column in [c for c in columns_a if c in columns_b]:
        both = [(scores_a[f][column], scores_b[f][column]) for f in pairs]
        both = [(a, b) for a, b in both if a is not None and b is not None]
        if not both:
            continue
        a_values, b_values = zip(*both)
        per_image[column] = {"a": sum(a_values) / len(a_values), "b": sum(b_values) / len(b_values),
                             "difference": paired_difference(a_values, b_values)}
    set_level = {}
    for key in SET_LEVEL:
        a, b = summary_a.get(key), summary_b.get(key)
        if a is None or b is None:
            continue
        entry: dict[str, Any] = {"a": a, "b": b, "difference": b - a}
        set_a, set_b = (s.get("seed_set") or {} for s in (summary_a, summary_b))
        spread_a, spread_b = set_a.get(key) or {}, set_b.get(key) or {}
        if spread_a.get("std") is not None and spread_b.get("std") is not None:
            entry["seed_sets"] = {"a": spread_a, "b": spread_b, "difference": spread_b["mean"] - spread_a["mean"],
                                  "std": math.hypot(spread_a["std"], spread_b["std"])}
        set_level[key] = entry
    return {"a": os.path.abspath(folder_a), "b": os.path.abspath(folder_b), "pairs": len(pairs),
            "only_in_a": len(set(scores_a) - set(scores_b)), "only_in_b": len(set(scores_b) - set(scores_a)),
            "per_image": per_image, "set_level": set_level, "intervals": protocol()}


def render(result: dict[str, Any]) -> str:
    lines = [f"A: {result['a']}", f"B: {result['b']}",
             f"{result['pairs']} image pairs (same file name); only in A: {result['only_in_a']}, "
             f"only in B: {result['only_in_b']}"]
    for name, e in result["per_image"].items():
        d = e["difference"]
        interval = "n/a" if d["interval"] is None else f"[{d['interval'][0]:+.4f}, {d['interval'][1]:+.4f}]"
        lines.append(f"{name}: A {e['a']:.4f}  B {e['b']:.4f}  B-A {d['mean']:+.4f}  95% interval {interval}")
    for name, e in result["set_level"].items():
        line = f"{name}: A {e['a']:.5g}  B {e['b']:.5g}  B-A {e['difference']:+.5g}"
        if "seed_sets" in e:
            s = e["seed_sets"]
            line += f"  (seed sets: B-A {s['difference']:+.5g} +- {s['std']:.3g} std)"
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="a scored folder (scores.csv written by evaluation.metrics)")
    p.add_argument("b", help="the other scored folder, same prompts and seeds")
    p.add_argument("--out", help="also write the comparison to this JSON file")
    args = p.parse_args(argv)
    result = compare(args.a, args.b)
    print(render(result))
    if args.out:
        from gen_worker.atomic_files import replace_json

        replace_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
