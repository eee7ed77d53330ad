"""Write ``report.json``, ``report.md`` and ``report.html`` with the scores and a grid of sample images.

Usage::

    python -m evaluation.report --generated DIR --metrics metrics.json --prompts_csv prompts.csv \\
        --out_dir REPORT_DIR [--grid_size 16] [--seed_start N] [--thumb_size 256]

Thumbnails (JPEG) and ``grid.jpg`` go to ``REPORT_DIR``, which must not be the generated folder or inside it
(FID tools glob the generated folder). Samples are spread evenly over the generated images sorted by image id
and seed, so the choice is deterministic.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import math
import os
from typing import Any, Sequence

from PIL import Image

from evaluation import generated as gen
from evaluation.errors import EvaluationError, read_json_file, run_cli
from gen_worker.output import layout
from gen_worker.output.atomic_files import read_json_if_any


def check_out_dir(out_dir: str, generated_dir: str) -> None:
    out, g = os.path.realpath(out_dir), os.path.realpath(generated_dir)
    if out == g or out.startswith(g + os.sep):
        raise EvaluationError(f"--out_dir {out_dir} is inside the generated folder {generated_dir}; put the report elsewhere")


def load_metrics(path: str) -> dict[str, Any]:
    data = read_json_file(path, "metrics file")
    if not isinstance(data, dict):
        raise EvaluationError(f"metrics file {path} does not hold a JSON object")
    return data


def pick_samples(n_total: int, grid_size: int) -> list[int]:
    """``grid_size`` indices spread evenly over ``range(n_total)`` (all of them if there are fewer)."""
    if grid_size <= 0 or n_total == 0:
        return []
    if n_total <= grid_size:
        return list(range(n_total))
    return sorted({round(i * (n_total - 1) / (grid_size - 1)) for i in range(grid_size)}) if grid_size > 1 else [0]


def make_thumbnail(src: str, dst: str, size: int) -> None:
    try:
        with Image.open(src) as im:
            thumb = im.convert("RGB")
    except Exception as exc:
        raise EvaluationError(f"cannot read image {src}: {exc}") from None
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    thumb.save(dst, quality=90)


def make_grid(thumb_paths: Sequence[str], dst: str, cell: int) -> None:
    cols = max(1, math.ceil(math.sqrt(len(thumb_paths))))
    rows = max(1, math.ceil(len(thumb_paths) / cols))
    grid = Image.new("RGB", (cols * cell, rows * cell), "white")
    for k, path in enumerate(thumb_paths):
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((cell, cell))
            x = (k % cols) * cell + (cell - im.width) // 2
            y = (k // cols) * cell + (cell - im.height) // 2
            grid.paste(im, (x, y))
    grid.save(dst, quality=90)


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    s, c = report["scores"], report["counts"]
    lines = [
        "# Evaluation report",
        "",
        "| metric | value |",
        "|---|---|",
        f"| FID (lower is better) | {_fmt(s.get('fid'))} |",
        f"| CLIP score (higher is better) | {_fmt(s.get('clip_score'))} |",
        f"| generated images | {c.get('generated_images')} |",
        f"| reference images | {c.get('reference_images', 'n/a')} |",
        f"| prompts (rows) | {c.get('prompt_rows')} |",
        f"| flagged by the safety checker | {c.get('nsfw_flagged', 'n/a')} |",
        f"| constant images (e.g. all black) | {c.get('constant_images', 'n/a')} |",
        "",
    ]
    for w in report["warnings"]:
        lines.append(f"> warning: {w}")
    if report["warnings"]:
        lines.append("")
    if report["samples"]:
        lines += ["## Samples", "", "![sample grid](grid.jpg)", "", "| # | image | prompt |", "|---|---|---|"]
        for k, smp in enumerate(report["samples"], 1):
            prompt = html.escape(smp["prompt"] or "(no prompt found)", quote=False).replace("|", "\\|")
            lines.append(f"| {k} | `{smp['file']}` | {prompt} |")
        lines.append("")
    lines.append(f"Settings and counts: `report.json`; metrics from `{report['metrics_file']}`.")
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any]) -> str:
    e = html.escape
    s, c = report["scores"], report["counts"]
    rows = [
        ("FID (lower is better)", _fmt(s.get("fid"))),
        ("CLIP score (higher is better)", _fmt(s.get("clip_score"))),
        ("generated images", c.get("generated_images")),
        ("reference images", c.get("reference_images", "n/a")),
        ("prompts (rows)", c.get("prompt_rows")),
        ("flagged by the safety checker", c.get("nsfw_flagged", "n/a")),
        ("constant images (e.g. all black)", c.get("constant_images", "n/a")),
    ]
    table = "\n".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    warns = "\n".join(f"<p class='warn'>warning: {e(w)}</p>" for w in report["warnings"])
    figures = "\n".join(
        f"<figure><img src='{e(smp['thumbnail'])}' alt='{e(smp['file'])}'>"
        f"<figcaption><b>{e(smp['file'])}</b><br>{e(smp['prompt'] or '(no prompt found)')}</figcaption></figure>"
        for smp in report["samples"]
    )
    settings = e(json.dumps(report["settings"], indent=2, ensure_ascii=False))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }}
figure {{ margin: 0; }} img {{ max-width: 100%; }} figcaption {{ font-size: 0.85em; }}
.warn {{ color: #a40; }}
</style></head>
<body>
<h1>Evaluation report</h1>
<table>
{table}
</table>
{warns}
<h2>Samples</h2>
<div class="grid">
{figures}
</div>
<h2>Settings</h2>
<pre>{settings}</pre>
<p>Created {e(report['created'])} from {e(report['metrics_file'])}.</p>
</body></html>
"""


def build_report(
    generated_dir: str,
    metrics_path: str,
    prompts_csv: str | None,
    out_dir: str,
    grid_size: int = 16,
    seed_start: int | None = None,
    thumb_size: int = 256,
    id_column: str | None = None,
    prompt_column: str | None = None,
) -> dict[str, Any]:
    check_out_dir(out_dir, generated_dir)
    metrics = load_metrics(metrics_path)
    images, ignored = gen.list_generated_images(generated_dir)
    matched, _, rows, seed_start = gen.match_folder(generated_dir, images, prompts_csv, seed_start, id_column,
                                                     prompt_column)

    warnings = list(metrics.get("warnings") or [])
    m_counts = dict(metrics.get("counts") or {})
    if m_counts.get("generated_images") not in (None, len(images)):
        warnings.append(
            f"metrics were computed on {m_counts['generated_images']} images, the folder now has {len(images)}"
        )

    thumbs_dir = os.path.join(out_dir, "thumbs")
    os.makedirs(thumbs_dir, exist_ok=True)
    samples, thumb_paths = [], []
    for k, i in enumerate(pick_samples(len(images), grid_size)):
        img, row = images[i], matched[i]
        name = os.path.basename(img.path)
        thumb_rel = f"thumbs/{k:03d}_{os.path.splitext(name)[0]}.jpg"
        make_thumbnail(img.path, os.path.join(out_dir, thumb_rel), thumb_size)
        thumb_paths.append(os.path.join(out_dir, thumb_rel))
        samples.append({
            "file": name, "image_id": img.image_id, "seed": img.seed,
            "prompt_row": row.index if row else None, "prompt": row.prompt if row else None,
            "thumbnail": thumb_rel,
        })
    if thumb_paths:
        make_grid(thumb_paths, os.path.join(out_dir, "grid.jpg"), cell=min(thumb_size, 192))

    # What the generation run counted (submit.py's summary.json): images the model's safety checker
    # blacked out (--safety_checker) or that came out constant weigh on the scores.
    run = read_json_if_any(os.path.join(generated_dir, layout.RUN_SUMMARY_FILE)) or {}
    for key, what in (("nsfw_flagged", "flagged by the safety checker (black)"),
                      ("constant_images", "constant (every pixel the same, e.g. all black)")):
        if run.get(key):
            warnings.append(f"{run[key]} generated images are {what}: they are in the scores")
    counts = {
        **m_counts,
        **{key: run[key] for key in ("nsfw_flagged", "constant_images") if key in run},
        "generated_images": len(images),
        "ignored_files": len(ignored),
        "prompt_rows": len(rows) if rows else m_counts.get("prompt_rows"),
        "prompts_with_images": len({r.index for r in matched if r is not None}) if rows else m_counts.get("prompts_with_images"),
    }
    return {
        "scores": {"fid": metrics.get("fid"), "clip_score": metrics.get("clip_score")},
        "counts": counts,
        "settings": {**(metrics.get("settings") or {}), "grid_size": grid_size, "report_seed_start": seed_start},
        "versions": metrics.get("versions"),
        "warnings": warnings,
        "samples": samples,
        "metrics_file": os.path.abspath(metrics_path),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_report(report: dict[str, Any], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_markdown(report))
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as f:
        f.write(render_html(report))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description="Scores and sample grid as json/md/html.")
    p.add_argument("--generated", required=True, help="folder with {image_id}_seed{seed}.png")
    p.add_argument("--metrics", required=True, help="metrics.json written by python -m evaluation.metrics")
    p.add_argument("--prompts_csv", help="prompts CSV, to show each sample's prompt")
    p.add_argument("--out_dir", required=True, help="report folder (not inside --generated)")
    p.add_argument("--grid_size", type=int, default=16, help="number of sample images (default 16)")
    p.add_argument("--seed_start", type=int, default=None,
                   help="seed of CSV row 0, for folders another tool made (default: the folder's recorded one)")
    p.add_argument("--id_column", help="id column of --prompts_csv (default: as submit.py: image_id or id)")
    p.add_argument("--prompt_column", help="prompt column of --prompts_csv (default: as submit.py: prompt, caption or text)")
    p.add_argument("--thumb_size", type=int, default=256, help="longest side of the thumbnails in pixels")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = build_report(args.generated, args.metrics, args.prompts_csv, args.out_dir,
                          args.grid_size, args.seed_start, args.thumb_size, args.id_column, args.prompt_column)
    write_report(report, args.out_dir)
    print(f"wrote report.json, report.md, report.html ({len(report['samples'])} samples) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
