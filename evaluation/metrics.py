"""Compute FID and CLIP score of a folder of generated images and write ``metrics.json``.

Usage::

    python -m evaluation.metrics --generated DIR (--reference_dir DIR [--reference_list refs.txt] |
        --reference_stats stats.npz) --prompts_csv prompts.csv --inception_weights inception-2015-12-05.pt \\
        --clip_model CLIP_DIR --out metrics.json [--device auto|cuda|cpu] [--batch_size 64] \\
        [--save_reference_stats stats.npz] [--seed_start N] [--no_fid] [--no_clip]

Weights come only from the given local paths; nothing is downloaded (HF_HUB_OFFLINE=1, local_files_only).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import sys
import time
from typing import Any, Sequence

from evaluation.errors import EvaluationError, run_cli
from evaluation.generated import has_manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.metrics",
        description="FID (against reference images or saved statistics) and CLIP score of generated images.",
    )
    p.add_argument("--generated", required=True, help="folder with {image_id}_seed{seed}.png (only its own *.png)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--reference_dir", help="folder of reference images (jpg/png/... directly in it)")
    ref.add_argument("--reference_stats", help=".npz with mu/sigma saved by --save_reference_stats")
    p.add_argument("--reference_list", help="use only these file names (one a line) from --reference_dir")
    p.add_argument("--save_reference_stats", help="save the reference mu/sigma to this .npz for reuse")
    p.add_argument("--prompts_csv", help="the prompts CSV the images were generated from (CLIP score; default: the "
                                         "folder's manifest.csv, which submit.py writes)")
    p.add_argument("--id_column", help="id column of --prompts_csv (default: as submit.py: image_id or id)")
    p.add_argument("--prompt_column", help="prompt column of --prompts_csv (default: as submit.py: prompt, caption or text)")
    p.add_argument("--inception_weights", help="inception-2015-12-05.pt (NVIDIA's TorchScript FID Inception)")
    p.add_argument("--clip_model", help="local folder of a transformers CLIP model, e.g. clip-vit-large-patch14")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:N or cpu")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1), help="image loading processes")
    p.add_argument("--seed_start", type=int, default=None,
                   help="seed of CSV row 0, for folders another tool made (default: the folder's recorded one)")
    p.add_argument("--no_center_crop", action="store_true",
                   help="FID: do not centre-crop non-square images to a square before resizing to 299")
    p.add_argument("--no_fid", action="store_true")
    p.add_argument("--no_clip", action="store_true")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.no_fid and args.no_clip:
        raise EvaluationError("--no_fid and --no_clip together leave nothing to compute")
    if args.batch_size < 1:
        raise EvaluationError("--batch_size must be at least 1")
    if not args.no_fid:
        if not (args.reference_dir or args.reference_stats):
            raise EvaluationError("FID needs --reference_dir or --reference_stats (or pass --no_fid)")
        if args.reference_list and not args.reference_dir:
            raise EvaluationError("--reference_list needs --reference_dir")
    elif args.save_reference_stats:
        raise EvaluationError("--save_reference_stats needs FID (drop --no_fid)")
    if not args.no_clip and not args.prompts_csv and not has_manifest(args.generated):
        raise EvaluationError("CLIP score needs --prompts_csv, or a folder made by submit.py (its manifest.csv "
                              "names each image's prompt); or pass --no_clip")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchmetrics", "transformers", "numpy", "PIL"):
        mod = sys.modules.get(name)
        out[name] = getattr(mod, "__version__", "?") if mod else "not loaded"
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Compute the metrics described by parsed CLI ``args``; return the metrics.json content."""
    _check_args(args)
    started = time.time()
    from evaluation import generated as gen
    from evaluation import images as im
    from evaluation.weights import resolve_device, sha256_file

    device = resolve_device(args.device)
    images, ignored = gen.list_generated_images(args.generated)
    if not images:
        raise EvaluationError(f"no {{image_id}}_seed{{seed}}.png images directly in {args.generated}")

    rows, prompts, seed_start = None, None, None
    if args.prompts_csv or gen.has_manifest(args.generated):
        matched, unmatched, rows, seed_start = gen.match_folder(
            args.generated, images, args.prompts_csv, args.seed_start, args.id_column, args.prompt_column)
        if not args.no_clip:
            gen.require_all_matched(unmatched, len(images), seed_start)
            prompts = [r.prompt for r in matched]  # type: ignore[union-attr]

    result: dict[str, Any] = {"fid": None, "clip_score": None}
    settings: dict[str, Any] = {
        "generated": os.path.abspath(args.generated),
        "prompts_csv": os.path.abspath(args.prompts_csv) if args.prompts_csv else None,
        "seed_start": seed_start,
        "device": str(device),
        "batch_size": args.batch_size,
    }
    counts: dict[str, Any] = {
        "generated_images": len(images),
        "ignored_files": len(ignored),
        "prompt_rows": len(rows) if rows is not None else None,
        "prompts_with_images": len({r.index for r in matched if r is not None}) if rows is not None else None,
    }
    warnings: list[str] = []

    # Load every network first, so that a missing weight fails before any image work.
    fid_metric = clip_metric = None
    if not args.no_fid:
        from evaluation import fid as fidlib
        from evaluation.weights import load_inception

        net = load_inception(args.inception_weights, device)
        fid_metric = fidlib.make_fid_metric(net, device)
        center_crop = not args.no_center_crop
        stats_meta = {"inception_sha256": sha256_file(args.inception_weights), "center_crop": center_crop}
        settings.update(fid_network=os.path.abspath(args.inception_weights), fid_resize="clean-fid PIL bicubic 299",
                        center_crop=center_crop, inception_sha256=stats_meta["inception_sha256"])
    if not args.no_clip:
        from evaluation import clip_score as cliplib
        from evaluation.weights import load_clip

        model, tokenizer, image_processor = load_clip(args.clip_model, device)
        clip_metric = cliplib.make_clip_metric(model, tokenizer, image_processor, device)
        settings.update(clip_model=os.path.abspath(args.clip_model),
                        clip_convention="torchmetrics CLIPScore: max(mean(100*cos), 0)")

    if fid_metric is not None:
        if args.reference_stats:
            stats = fidlib.load_stats(args.reference_stats)
            warnings += fidlib.check_stats_compatible(stats, stats_meta, args.reference_stats)
            fidlib.set_reference_stats(fid_metric, stats)
            settings["reference_stats"] = os.path.abspath(args.reference_stats)
            counts["reference_images"] = stats.num_images or None
        else:
            ref_paths = gen.list_reference_images(args.reference_dir, args.reference_list)
            transform = {"fid": functools.partial(im.inception_input, center_crop=center_crop)}
            for _, batch in im.iterate_batches(ref_paths, transform, args.batch_size, args.num_workers, "reference"):
                fidlib.update_fid(fid_metric, batch["fid"], real=True)
            settings["reference_dir"] = os.path.abspath(args.reference_dir)
            settings["reference_list"] = os.path.abspath(args.reference_list) if args.reference_list else None
            counts["reference_images"] = len(ref_paths)
        if args.save_reference_stats:
            fidlib.save_stats(args.save_reference_stats, fidlib.reference_stats(fid_metric, stats_meta))
            settings["saved_reference_stats"] = os.path.abspath(args.save_reference_stats)

    transforms: dict[str, Any] = {}
    if fid_metric is not None:
        transforms["fid"] = functools.partial(im.inception_input, center_crop=center_crop)
    if clip_metric is not None:
        transforms["clip"] = cliplib.ClipImagePreprocess(image_processor)
    paths = [g.path for g in images]
    for indices, batch in im.iterate_batches(paths, transforms, args.batch_size, args.num_workers, "generated"):
        if fid_metric is not None:
            fidlib.update_fid(fid_metric, batch["fid"], real=False)
        if clip_metric is not None:
            cliplib.update_clip(clip_metric, batch["clip"], [prompts[i] for i in indices])  # type: ignore[index]

    if fid_metric is not None:
        result["fid"] = fidlib.compute_fid(fid_metric)
    if clip_metric is not None:
        result["clip_score"] = cliplib.compute_clip(clip_metric)

    result.update(
        counts=counts,
        settings=settings,
        warnings=warnings,
        versions=_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        elapsed_s=round(time.time() - started, 2),
    )
    return result


def write_json(data: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    write_json(result, args.out)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    parts = [f"{k}={result[k]:.4f}" for k in ("fid", "clip_score") if result[k] is not None]
    print(f"{' '.join(parts)} ({result['counts']['generated_images']} images) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
