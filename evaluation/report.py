"""Write ``report.json``, ``report.md`` and ``report.html`` with the scores and sample images.

Usage::

    python -m evaluation.report --generated DIR --metrics metrics.json --prompts_csv prompts.csv \\
        --out_dir REPORT_DIR [--grid_size 16] [--seed_start N] [--thumb_size 256]

``DIR`` is a run folder or a sweep folder (sweep.json, gen_worker/output/sweep_record.py); a run folder is a
sweep of one configuration. The page shows, in this order: the table of configurations (each swept setting,
FID, KID ± std, CLIP score, images), the counts, the FID-versus-CLIP-score plot (two configurations or more;
PNG embedded in the page and saved as fid_clip.png), warnings, the metric protocol, then the samples: one row
per sample (same prompt, same seed), one column per configuration. Thumbnails are shown 160 px whatever the
generation size (small ones pixelated, not blurred); long prompts are cut to 3 lines, the full text on hover.

Thumbnails (JPEG), ``grid.jpg`` and the plot go to ``REPORT_DIR``, which must not be the generated folder or
inside it (FID tools glob the generated folder). Samples are spread evenly over the first configuration's
images sorted by image id and seed, so the choice is deterministic.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import json
import math
import os
from typing import Any, Sequence

from PIL import Image

from evaluation import generated as gen
from evaluation.errors import EvaluationError, read_json_file, run_cli
from evaluation.metrics import find_targets
from gen_worker.output import layout
from gen_worker.atomic_files import read_json_if_any, replace_file, replace_json


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


DISPLAY_SIZE = 160  # every thumbnail is shown this size (CSS), whatever the generation size
PLOT_FILE = "fid_clip.png"


def make_thumbnail(src: str | gen.GeneratedImage, dst: str, size: int) -> tuple[int, int]:
    """A JPEG of at most ``size`` pixels a side (never enlarged: the page scales it) of an image file or a
    generated image (its file or tar shard member); returns its size."""
    try:
        with Image.open(io.BytesIO(gen.read_png_bytes(src))) as im:
            thumb = im.convert("RGB")
    except Exception as exc:
        raise EvaluationError(f"cannot read image {src}: {exc}") from None
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    thumb.save(dst, quality=90)
    return thumb.size


def make_grid(thumb_paths: Sequence[str | None], dst: str, cell: int, cols: int | None = None) -> None:
    """The thumbnails in rows of ``cols`` (default: a square-ish grid); None leaves its cell blank."""
    cols = cols or max(1, math.ceil(math.sqrt(len(thumb_paths))))
    rows = max(1, math.ceil(len(thumb_paths) / cols))
    grid = Image.new("RGB", (cols * cell, rows * cell), "white")
    for k, path in enumerate(thumb_paths):
        if path is None:
            continue
        with Image.open(path) as im:
            im = im.convert("RGB")
            # enlarge small images with nearest neighbour (pixels stay visible), shrink large ones smoothly
            scale = cell / max(im.size)
            resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
            x = (k % cols) * cell + (cell - im.width) // 2
            y = (k // cols) * cell + (cell - im.height) // 2
            grid.paste(im, (x, y))
    grid.save(dst, quality=90)


def fid_clip_plot(configurations: Sequence[dict[str, Any]]) -> bytes | None:
    """PNG of FID against CLIP score, one point per configuration (named), joined in sweep order;
    None when fewer than two configurations have both scores."""
    points = [(c["clip_score"], c["fid"], c["name"]) for c in configurations
              if c.get("clip_score") is not None and c.get("fid") is not None]
    if len(points) < 2:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs, ys, names = zip(*points)
    ax.plot(xs, ys, "-o", color="tab:blue")
    for x, y, name in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("CLIP score (100 x cosine, torchmetrics convention; higher is better)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("FID versus CLIP score, configurations in sweep order")
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def speed_versus_quality(configurations: Sequence[dict[str, Any]], generated_dir: str, out_dir: str) -> dict[str, Any]:
    """The speed of each configuration beside its quality (issue 20): its run's summary.json speed (images per second
    over the run's wall time, seconds and denoiser seconds per image, the GPU's peak memory) added to each
    configuration, a table of them with FID and CLIP score (speed.md) and, with two or more configurations
    measured, FID and CLIP score against images per second, the points named by configuration (speed.png).
    Returns {"table": "speed.md", "plot": "speed.png" or None}."""
    keys = ("images_per_second", "seconds_per_image", "denoiser_seconds_per_image", "peak_gpu_memory_bytes")
    for c in configurations:
        run = read_json_if_any(os.path.join(generated_dir, c["folder"], layout.RUN_SUMMARY_FILE)) or {}
        c.update({k: run.get(k) for k in keys})
    lines = ["# Speed and quality", "", "| configuration | images/s | s/image | denoiser s/image | peak GPU memory (GiB) "
             "| FID (lower is better) | CLIP score (higher is better) |", "|---|---|---|---|---|---|---|"]
    for c in configurations:
        peak = c["peak_gpu_memory_bytes"]
        cells = [c["name"] or "(the folder)", _fmt(c["images_per_second"]), _fmt(c["seconds_per_image"], 4),
                 _fmt(c["denoiser_seconds_per_image"], 4), _fmt(peak / 2**30 if peak is not None else None, 2),
                 _fmt(c.get("fid")), _fmt(c.get("clip_score"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "images/s: the run's images over its wall time (start-up included); s/image: the median block's, "
              "the first block left out. A rerun that made few images measures little."]
    points = [c for c in configurations if c["images_per_second"]]
    plot = None
    if len(points) >= 2 and any(c.get(m) is not None for c in points for m in ("fid", "clip_score")):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=(11, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        for ax, metric, label in zip(fig.subplots(1, 2), ("fid", "clip_score"),
                                     ("FID (lower is better)", "CLIP score (higher is better)")):
            named = [(c["images_per_second"], c[metric], c["name"]) for c in points if c.get(metric) is not None]
            ax.plot([x for x, _, _ in named], [y for _, y, _ in named], "o", color="tab:blue")
            for x, y, name in named:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
            ax.set_xlabel("images per second (faster to the right)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.margins(0.15)
        fig.suptitle("Quality against speed, one point per configuration")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        replace_file(os.path.join(out_dir, "speed.png"), buf.getvalue())
        plot = "speed.png"
        lines += ["", f"![quality against speed]({plot})"]
    replace_file(os.path.join(out_dir, "speed.md"), ("\n".join(lines) + "\n").encode("utf-8"))
    return {"table": "speed.md", "plot": plot}


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _kid(c: dict[str, Any]) -> str:
    if c.get("kid") is None:
        return "n/a"
    return f"{c['kid']:.5f} ± {c.get('kid_std') or 0:.5f}"


def _configuration_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the configurations table (name, each swept setting, FID, KID, CLIP, images)."""
    axes = report["swept"]
    header = ["configuration", *axes, "FID (lower is better)", "KID ± std (lower is better)",
              "CLIP score (higher is better)", "images/s", "images"]
    rows = [[c["name"], *(c["overrides"].get(a, "") for a in axes), _fmt(c.get("fid")), _kid(c),
             _fmt(c.get("clip_score")), _fmt(c.get("images_per_second")), str(c["images"])]
            for c in report["configurations"]]
    return header, rows


def _protocol_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    p = report.get("protocol") or {}
    fid, kid, clip = p.get("fid"), p.get("kid"), p.get("clip")
    rows = []
    if fid:
        ref = fid.get("reference") or {}
        rows += [("FID/KID protocol", f"{fid.get('protocol', 'clean')}; non-square images: {fid.get('non_square', '?')}"),
                 ("FID/KID resize", fid.get("resize", "?")),
                 ("FID reference set", f"{ref.get('dir') or ref.get('stats')} ({fid.get('reference_images')} images)"),
                 ("FID feature network", f"{fid.get('feature_network_is', '?')}: {fid.get('feature_network')} (sha256 "
                                         f"{fid.get('feature_network_sha256')}, {fid.get('features')} features)")]
    if kid:
        rows.append(("KID subsets", f"{kid['subsets']} subsets of {kid['subset_size']} images "
                                    f"({kid.get('subset_rule')}), seed {kid.get('seed')}, {kid.get('kernel')}"))
    from evaluation.scores_file import PREFERENCE_TITLES

    for key, title in PREFERENCE_TITLES.items():
        if p.get(key):
            m = p[key]
            rows += [(f"{title} model", f"{m.get('model')} ({m.get('model_is')}); {m.get('score')}"),
                     (f"{title} resize", m.get("resize", "?"))]
    if p.get("cmmd"):
        rows.append(("CMMD", f"{p['cmmd'].get('description')}; embeddings of {p['cmmd'].get('embeddings')}"))
    if clip:
        rows += [("CLIP model", f"{clip.get('model', '?')} ({clip.get('model_is', '?')})"), ("CLIP score", clip.get("score", "?")),
                 ("CLIP resize", clip.get("resize", "?")),
                 ("prompts longer than the text encoder's limit",
                  f"{clip.get('prompts_over_max_tokens')} of {clip.get('prompts')} "
                  f"(limit {clip.get('max_tokens')} tokens, CLIP tokenizer)")]
    return rows


def _summary_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    c = report["counts"]
    return [
        ("generated images", c.get("generated_images")),
        ("verified as their run's (provenance)", _verified(report.get("verification"))),
        ("reference images", c.get("reference_images", "n/a")),
        ("prompts (rows)", c.get("prompt_rows")),
        ("flagged by the safety checker", c.get("nsfw_flagged", "n/a")),
        ("constant images (e.g. all black)", c.get("constant_images", "n/a")),
    ]


def _verified(verification: dict[str, Any] | None) -> str:
    """What metrics.json says of the images' verification, as one cell."""
    if not verification:
        return "not checked (metrics.json from before verification)"
    done = f"{verification['images'] - verification['unverified']} of {verification['images']}"
    return done + (" (--allow_unverified: the others scored too)" if verification["unverified"] else "")


def uncertainty_section(metrics: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Per configuration (report names, in order) its CMMD and each per-image mean with its bootstrap 95%
    interval; and the seed-set groups (mean and std over seed_start) of a sweep over seed_start."""
    scored = metrics.get("configurations") or [metrics]
    rows = []
    for name, m in zip(names, scored):
        means = {key: {"value": m.get(key), "interval": interval}
                 for key, interval in (m.get("intervals") or {}).items()}
        rows.append({"name": name, "cmmd": m.get("cmmd"), "means": means})
    return {"configurations": rows, "seed_sets": metrics.get("seed_sets") or [],
            "intervals": (metrics.get("protocol") or {}).get("intervals")}


def _interval_rows(report: dict[str, Any]) -> list[list[str]]:
    """[configuration, score, value, 95% interval] rows: every per-image mean, then CMMD (one number)."""
    rows = []
    for c in (report.get("uncertainty") or {}).get("configurations", []):
        for key, e in c["means"].items():
            interval = e["interval"]
            shown = "n/a" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
            rows.append([c["name"], key, _fmt(e["value"]), shown])
        if c.get("cmmd") is not None:
            rows.append([c["name"], "cmmd (lower is better)", _fmt(c["cmmd"], 4), "one number per set"])
    return rows


def _seed_set_rows(report: dict[str, Any]) -> list[list[str]]:
    """[group, seed sets, FID, KID, CMMD, CLIP score] rows, each score as mean ± std over the seed sets."""
    def spread(e: dict[str, Any] | None, digits: int) -> str:
        if not e:
            return "n/a"
        return f"{e['mean']:.{digits}f}" + ("" if e.get("std") is None else f" ± {e['std']:.{digits}f}")

    return [[g["name"], ", ".join(str(s) for s in g["seed_starts"]), spread(g.get("fid"), 3), spread(g.get("kid"), 5),
             spread(g.get("cmmd"), 4), spread(g.get("clip_score"), 3)]
            for g in (report.get("uncertainty") or {}).get("seed_sets", [])]


_INTERVAL_HEADER = ["configuration", "score", "value", "95% interval (bootstrap over images)"]
_SEED_SET_HEADER = ["configuration", "seed_start values", "FID mean ± std", "KID mean ± std", "CMMD mean ± std",
                    "CLIP score mean ± std"]


def _uncertainty_markdown(report: dict[str, Any]) -> list[str]:
    lines = []
    for title, header, rows in (("Intervals", _INTERVAL_HEADER, _interval_rows(report)),
                                ("Seed sets", _SEED_SET_HEADER, _seed_set_rows(report))):
        if rows:
            lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(html.escape(v, quote=False).replace("|", "\\|") for v in r) + " |" for r in rows]
            lines.append("")
    return lines


def _uncertainty_html(report: dict[str, Any]) -> str:
    e = html.escape
    parts = []
    for title, css, header, rows in (("Intervals", "intervals", _INTERVAL_HEADER, _interval_rows(report)),
                                     ("Seed sets", "seed-sets", _SEED_SET_HEADER, _seed_set_rows(report))):
        if rows:
            body = "\n".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in rows)
            parts.append(f"<h2>{title}</h2>\n<table class='{css}'>\n<tr>"
                         + "".join(f"<th>{e(h)}</th>" for h in header) + f"</tr>\n{body}\n</table>")
    return "\n".join(parts)


def render_markdown(report: dict[str, Any]) -> str:
    def cell(text: Any) -> str:
        return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")

    header, rows = _configuration_rows(report)
    lines = ["# Evaluation report", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    lines += ["", "| count | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _summary_rows(report)]
    lines.append("")
    if report["plot"]:
        lines += [f"![FID versus CLIP score]({report['plot']})", ""]
    speed = report.get("speed") or {}
    if speed.get("plot"):
        lines += [f"![quality against speed]({speed['plot']})", ""]
    if speed.get("table"):
        lines += [f"Speed per configuration: [{speed['table']}]({speed['table']}).", ""]
    protocol = _protocol_rows(report)
    if protocol:
        lines += ["## Protocol", "", "| | |", "|---|---|"] + [f"| {k} | {cell(v)} |" for k, v in protocol] + [""]
    lines += _uncertainty_markdown(report)
    for w in report["warnings"]:
        lines.append(f"> warning: {w}")
    if report["warnings"]:
        lines.append("")
    if report["samples"]:
        names = [c["name"] for c in report["configurations"]]
        lines += ["## Samples", "", "![sample grid](grid.jpg)", "",
                  "| # | image | prompt | " + " | ".join(cell(n) for n in names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for k, smp in enumerate(report["samples"], 1):
            thumbs = " | ".join(f"![{cell(n)}]({t})" if t else "missing" for n, t in zip(names, smp["thumbnails"]))
            lines.append(f"| {k} | `{smp['file']}` | {cell(smp['prompt'] or '(no prompt found)')} | {thumbs} |")
        lines.append("")
    lines.append(f"Settings and counts: `report.json`; metrics from `{report['metrics_file']}`.")
    return "\n".join(lines) + "\n"


_CSS = f"""
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
img.thumb {{ width: {DISPLAY_SIZE}px; height: {DISPLAY_SIZE}px; object-fit: contain; background: #f4f4f4; display: block; }}
img.small {{ image-rendering: pixelated; }}
.prompt {{ display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 3; line-clamp: 3;
          overflow: hidden; width: 18em; line-height: 1.25; }}
.file {{ color: #666; font-size: 0.8em; }}
.warn {{ color: #a40; }}
img.plot {{ max-width: 100%; }}
"""


def render_html(report: dict[str, Any]) -> str:
    e = html.escape
    header, rows = _configuration_rows(report)
    n_text = 1 + len(report["swept"])  # the name and setting columns; the rest are numbers
    configs = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>\n" + "\n".join(
        "<tr>" + "".join(f"<td>{e(v)}</td>" if i < n_text else f"<td class='num'>{e(v)}</td>"
                         for i, v in enumerate(row)) + "</tr>" for row in rows)
    summary = "\n".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in _summary_rows(report))
    plot = ""
    if report["plot_png_base64"]:
        plot = (f"<h2>FID versus CLIP score</h2>\n<img class='plot' alt='FID versus CLIP score, one point per "
                f"configuration' src='data:image/png;base64,{report['plot_png_base64']}'>")
    speed_plot = (report.get("speed") or {}).get("plot")
    if speed_plot:
        plot += (f"\n<h2>Quality against speed</h2>\n<img class='plot' alt='FID and CLIP score against images per "
                 f"second, one point per configuration' src='{e(speed_plot)}'>")
    protocol = "\n".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in _protocol_rows(report))
    warns = "\n".join(f"<p class='warn'>warning: {e(w)}</p>" for w in report["warnings"])
    names = [c["name"] for c in report["configurations"]]
    sample_rows = []
    for smp in report["samples"]:
        prompt = smp["prompt"] or "(no prompt found)"
        cells = [f"<td><div class='prompt' title='{e(prompt)}'>{e(prompt)}</div>"
                 f"<div class='file'>{e(smp['file'])} (seed {smp['seed']})</div></td>"]
        for name, thumb, size in zip(names, smp["thumbnails"], smp["thumbnail_sizes"]):
            small = " small" if size and max(size) < DISPLAY_SIZE else ""
            cells.append(f"<td><img class='thumb{small}' src='{e(thumb)}' width='{DISPLAY_SIZE}' "
                         f"height='{DISPLAY_SIZE}' alt='{e(name)}: {e(smp['file'])}' loading='lazy'></td>"
                         if thumb else "<td>missing</td>")
        sample_rows.append("<tr>" + "".join(cells) + "</tr>")
    samples_head = f"<tr><th>prompt{' (same seed in every column)' if len(names) > 1 else ''}</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"
    settings = e(json.dumps(report["settings"], indent=2, ensure_ascii=False))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation report</title>
<style>{_CSS}</style></head>
<body>
<h1>Evaluation report</h1>
<table class="configurations">
{configs}
</table>
<table class="counts">
{summary}
</table>
{plot}
{warns}
{f"<h2>Protocol</h2>{chr(10)}<table class='protocol'>{chr(10)}{protocol}{chr(10)}</table>" if protocol else ""}
{_uncertainty_html(report)}
<h2>Samples</h2>
<table class="samples">
{samples_head}
{chr(10).join(sample_rows)}
</table>
<h2>Settings</h2>
<pre>{settings}</pre>
<p>Created {e(report['created'])} from {e(report['metrics_file'])}.</p>
</body></html>
"""


def _metric_configurations(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> scores and counts, from a sweep's metrics.json or a plain folder's (one unnamed entry)."""
    if "configurations" in metrics:
        return {c["name"]: c for c in metrics["configurations"]}
    return {"": {**{k: metrics.get(k) for k in ("fid", "kid", "kid_std", "clip_score")},
                 "counts": metrics.get("counts") or {}}}


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
    record, targets = find_targets(generated_dir)
    scored = _metric_configurations(metrics)
    warnings = list(metrics.get("warnings") or [])
    if record is not None and "configurations" not in metrics:
        raise EvaluationError(f"{generated_dir} is a sweep but {metrics_path} scores one folder: run the metrics "
                              f"on the sweep folder")

    configurations, folders = [], []
    totals: dict[str, Any] = {"generated_images": 0, "ignored_files": 0}
    for t in targets:
        images, ignored = gen.list_generated_images(t.folder)
        matched, _, rows, start = gen.match_folder(t.folder, images, prompts_csv, seed_start, id_column,
                                                   prompt_column)
        m = scored.get(t.name if record is not None else "")
        if m is None:
            warnings.append(f"configuration {t.name} has no scores in {metrics_path}")
            m = {}
        m_counts = dict(m.get("counts") or {})
        where = f"{t.name}: " if record is not None else ""
        if m_counts.get("generated_images") not in (None, len(images)):
            warnings.append(f"{where}metrics were computed on {m_counts['generated_images']} images, the folder "
                            f"now has {len(images)}")
        # What the generation run counted (submit.py's summary.json): images the model's safety checker
        # blacked out (--safety_checker) or that came out constant weigh on the scores.
        run = read_json_if_any(os.path.join(t.folder, layout.RUN_SUMMARY_FILE)) or {}
        for key, what in (("nsfw_flagged", "flagged by the safety checker (black)"),
                          ("constant_images", "constant (every pixel the same, e.g. all black)")):
            if run.get(key):
                warnings.append(f"{where}{run[key]} generated images are {what}: they are in the scores")
            if key in run:
                totals[key] = totals.get(key, 0) + run[key]
        totals["generated_images"] += len(images)
        totals["ignored_files"] += len(ignored)
        totals.setdefault("prompt_rows", len(rows) if rows else m_counts.get("prompt_rows"))
        configurations.append({"name": t.name, "folder": os.path.relpath(t.folder, generated_dir),
                               "overrides": t.overrides, "images": len(images),
                               **{k: m.get(k) for k in ("fid", "kid", "kid_std", "clip_score")}})
        folders.append((t, images, matched, start))

    # Samples: spread over the first configuration's images; every configuration shows its image of
    # the same file name (same prompt, same seed: a sweep's configurations are paired).
    thumbs_dir = os.path.join(out_dir, "thumbs")
    os.makedirs(thumbs_dir, exist_ok=True)
    _, first_images, first_matched, first_start = folders[0]
    by_name = [{g.name or os.path.basename(g.path): g for g in images} for _, images, _, _ in folders]
    samples, grid_cells = [], []
    for k, i in enumerate(pick_samples(len(first_images), grid_size)):
        img, row = first_images[i], first_matched[i]
        name = img.name or os.path.basename(img.path)
        thumbs, sizes = [], []
        for c, images in enumerate(by_name):
            if name not in images:
                thumbs.append(None)
                sizes.append(None)
                continue
            rel = f"thumbs/{k:03d}_{c:02d}_{os.path.splitext(name)[0]}.jpg"
            sizes.append(make_thumbnail(images[name], os.path.join(out_dir, rel), thumb_size))
            thumbs.append(rel)
        grid_cells += [os.path.join(out_dir, t) if t else None for t in thumbs]
        samples.append({
            "file": name, "image_id": img.image_id, "seed": img.seed,
            "prompt_row": row.index if row else None, "prompt": row.prompt if row else None,
            "thumbnails": thumbs, "thumbnail_sizes": sizes,
        })
    if grid_cells:
        make_grid(grid_cells, os.path.join(out_dir, "grid.jpg"), cell=min(thumb_size, 192),
                  cols=len(folders) if record is not None else None)

    plot_png = fid_clip_plot(configurations)
    if plot_png:
        replace_file(os.path.join(out_dir, PLOT_FILE), plot_png)
    m_counts = dict(metrics.get("counts") or {})
    counts = {**m_counts, **totals}
    report: dict[str, Any] = {
        "configurations": configurations,
        "swept": list(record.axes) if record is not None else [],
        "counts": counts,
        "protocol": metrics.get("protocol") or {},
        "settings": {**(metrics.get("settings") or {}), "grid_size": grid_size, "report_seed_start": first_start},
        "versions": metrics.get("versions"),
        "warnings": warnings,
        "verification": metrics.get("verification"),
        "plot": PLOT_FILE if plot_png else None,
        "plot_png_base64": base64.b64encode(plot_png).decode("ascii") if plot_png else None,
        "samples": samples,
        "uncertainty": uncertainty_section(metrics, [c["name"] for c in configurations]),
        "metrics_file": os.path.abspath(metrics_path),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if record is None:
        report["scores"] = {k: metrics.get(k) for k in ("fid", "kid", "kid_std", "clip_score")}
    report["speed"] = speed_versus_quality(configurations, generated_dir, out_dir)
    return report


def write_report(report: dict[str, Any], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    replace_json(os.path.join(out_dir, "report.json"), {k: v for k, v in report.items() if k != "plot_png_base64"})
    replace_file(os.path.join(out_dir, "report.md"), render_markdown(report).encode("utf-8"))
    replace_file(os.path.join(out_dir, "report.html"), render_html(report).encode("utf-8"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description="Scores and sample grid as json/md/html.")
    p.add_argument("--generated", required=True, help="folder with {image_id}_seed{seed}.png or their tar shards "
                                                      "(shards/*.tar), or a sweep folder")
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
