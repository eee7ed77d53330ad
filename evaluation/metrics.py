"""Compute FID, KID and CLIP score of a folder of generated images (or of every configuration of a sweep
folder, against one reference side) and write ``metrics.json`` with the metric protocol.

Usage::

    python -m evaluation.metrics --generated DIR (--reference_dir DIR [--reference_list refs.txt] |
        --reference_stats stats.npz) --prompts_csv prompts.csv --inception_weights inception-2015-12-05.pt \\
        --clip_model CLIP_DIR --out metrics.json [--device auto|cuda|cpu] [--batch_size 64] \\
        [--save_reference_stats stats.npz] [--seed_start N] [--allow_incomplete] [--allow_unverified] \\
        [--no_fid] [--no_clip]

Weights come only from the given local paths; nothing is downloaded (HF_HUB_OFFLINE=1, local_files_only).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from evaluation.errors import EvaluationError, run_cli
from evaluation.generated import has_manifest
from evaluation.scores_file import PREFERENCE_SCORES, SCORES_FILE, SUMMARY_FILE
from gen_worker.atomic_files import replace_json
from gen_worker.output.summary import missing_images
from gen_worker.output.sweep_record import SweepRecord, read_sweep_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.metrics",
        description="FID and KID (against reference images or saved statistics) and CLIP score of generated images; "
                    "given a sweep folder (sweep.json), of each of its configurations.",
    )
    p.add_argument("--generated", required=True, help="folder with {image_id}_seed{seed}.png (only its own *.png) "
                                                      "or their tar shards (shards/*.tar), or a sweep folder "
                                                      "(sweep.json: every configuration)")
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
    p.add_argument("--protocol", choices=("clean", "legacy_tensorflow"), default="clean",
                   help="FID/KID input: clean (clean-fid's resize to 299 before the network; default) or "
                        "legacy_tensorflow (8-bit image at its own size, resized inside the network, as "
                        "torch-fidelity and the TensorFlow FID code); recorded in metrics.json")
    p.add_argument("--no_center_crop", action="store_true",
                   help="FID: do not centre-crop non-square images to a square before resizing to 299")
    p.add_argument("--allow_incomplete", action="store_true",
                   help="score a folder (or configuration) that lacks some of the images its manifest lists, "
                        "instead of refusing it; recorded in metrics.json, with the count of missing images")
    p.add_argument("--allow_unverified", action="store_true",
                   help="score images whose embedded provenance does not match their folder's record (another "
                        "tool's, edited, other settings) instead of refusing them; recorded in metrics.json")
    p.add_argument("--cluster", choices=("local", "slurm"), default="local",
                   help="slurm: extract features and per-image scores as a job array of --gpus tasks over slices of "
                        "the images (submit.py's SLURM flags), then score here; a rerun queues only missing slices")
    from gen_worker.flags import add_flags
    from gen_worker.slurm.options import SlurmOptions

    slurm = p.add_argument_group("SLURM (--cluster slurm; as submit.py's)")
    add_flags(SlurmOptions, {"run": slurm, "slurm": slurm})
    p.add_argument("--no_fid", action="store_true")
    p.add_argument("--no_clip", action="store_true")
    p.add_argument("--pickscore_model", help="local folder of PickScore (the PickScore_v1 CLIP model with the "
                                             "CLIP-ViT-H-14 processor): per-image PickScore, its mean and interval")
    p.add_argument("--hps_model", help="local folder with HPS_v2.1_compressed.pt and the CLIP-ViT-H-14 tokenizer: "
                                       "per-image HPS v2.1, its mean and interval")
    p.add_argument("--imagereward_model", help="local folder with ImageReward.pt, med_config.json and the "
                                               "bert-base-uncased tokenizer: per-image ImageReward, mean and interval")
    p.add_argument("--no_cmmd", action="store_true",
                   help="no CMMD (default: computed with the CLIP model whenever there are reference images)")
    return p


def _preference(args: argparse.Namespace) -> dict[str, str]:
    """The preference scorers asked for (evaluation/preference.py): name -> local folder."""
    return {name: getattr(args, f"{name}_model") for name in PREFERENCE_SCORES if getattr(args, f"{name}_model", None)}


def _needs_prompts(args: argparse.Namespace) -> bool:
    return not args.no_clip or bool(_preference(args))


def _check_args(args: argparse.Namespace) -> None:
    if args.no_fid and args.no_clip and not _preference(args):
        raise EvaluationError("--no_fid and --no_clip together leave nothing to compute")
    from evaluation.preference import check_folder

    for name, folder in _preference(args).items():  # before any image is listed or read
        check_folder(name, folder)
    if args.batch_size < 1:
        raise EvaluationError("--batch_size must be at least 1")
    if not args.no_fid:
        if not (args.reference_dir or args.reference_stats):
            raise EvaluationError("FID needs --reference_dir or --reference_stats (or pass --no_fid)")
        if args.reference_list and not args.reference_dir:
            raise EvaluationError("--reference_list needs --reference_dir")
    elif args.save_reference_stats:
        raise EvaluationError("--save_reference_stats needs FID (drop --no_fid)")


@dataclass(frozen=True)
class Target:
    """One folder to score: the --generated folder itself, or one configuration of a sweep."""
    name: str
    folder: str
    overrides: dict[str, str]


def find_targets(generated: str) -> tuple[SweepRecord | None, list[Target]]:
    """The configurations of a sweep folder (sweep.json), in sweep order, or the plain run folder itself."""
    record = read_sweep_record(generated)
    if record is None:
        return None, [Target(os.path.basename(os.path.abspath(generated)), generated, {})]
    return record, [Target(c.name, record.folder(generated, c), c.overrides) for c in record.configurations]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchmetrics", "transformers", "numpy", "PIL"):
        mod = sys.modules.get(name)
        out[name] = getattr(mod, "__version__", "?") if mod else "not loaded"
    return out


def run(args: argparse.Namespace, argv: Sequence[str] | None = None, task: Any = None) -> dict[str, Any]:
    """Compute the metrics described by parsed CLI ``args``; return the metrics.json content.

    A sweep folder (sweep.json) is scored configuration by configuration against one reference side,
    computed (or loaded) once; a plain run folder is a sweep of one without the ``configurations`` list.
    Each scored folder also gets its per-image scores (scores.csv, scores.json: evaluation/scores_file.py).
    """
    _check_args(args)
    started = time.time()
    from evaluation import generated as gen
    from evaluation import images as im
    from evaluation import uncertainty, verification
    from evaluation.weights import identify, resolve_device, sha256_file

    device = resolve_device(args.device)
    record, targets = find_targets(args.generated)
    # Every folder's images and prompts first: a configuration that cannot be scored fails before any work.
    folders = []
    scored_prompts: set[str] = set()
    warnings: list[str] = []
    failed: list[tuple[Any, str]] = []
    for t in targets:
        images, ignored = gen.list_generated_images(t.folder)
        ignored = [n for n in ignored if n not in (SCORES_FILE, SUMMARY_FILE)]  # our own files are not strays
        if not images:
            raise EvaluationError(f"no {{image_id}}_seed{{seed}}.png images directly in {t.folder} (nor in "
                                  f"shards/*.tar)")
        # Scores of a part of the run would pass for the run's: only when asked, and said.
        missing, listed = missing_images(t.folder)
        if missing:
            what = f"{t.folder}: {len(missing)} of the {listed} images its manifest lists are missing (first {missing[0]})"
            if not args.allow_incomplete:
                raise EvaluationError(f"{what}; finish the run (rerun its submit.py command), or pass --allow_incomplete "
                                      f"to score the {len(images)} there")
            warnings.append(f"{what}: scored the {len(images)} there (--allow_incomplete)")
        if _needs_prompts(args) and not args.prompts_csv and not has_manifest(t.folder):
            raise EvaluationError(f"CLIP score needs --prompts_csv, or a folder made by submit.py (its manifest.csv "
                                  f"names each image's prompt; none in {t.folder}); or pass --no_clip")
        rows, prompts, matched, seed_start = None, None, [], None
        if args.prompts_csv or gen.has_manifest(t.folder):
            matched, unmatched, rows, seed_start = gen.match_folder(
                t.folder, images, args.prompts_csv, args.seed_start, args.id_column, args.prompt_column)
            if _needs_prompts(args):
                gen.require_all_matched(unmatched, len(images), seed_start)
                prompts = [r.prompt for r in matched]  # type: ignore[union-attr]
                scored_prompts.update(prompts)
        if task is None:  # a SLURM task's submitter verified them all
            unverified = verification.unverified(t.folder, images)
            failed += unverified
            if unverified:
                warnings.append(f"{t.folder}: {len(unverified)} of {len(images)} images not verified (first "
                                f"{unverified[0][0]}: {unverified[0][1]}; --allow_unverified)")
        folders.append((t, images, ignored, len(missing), rows, matched, prompts, seed_start))
    if failed and not args.allow_unverified:  # before any network is loaded or any feature extracted
        image, why = failed[0]
        raise EvaluationError(f"{image} is not an image its folder's run made: {why} ({len(failed)} such images; "
                              f"pass --allow_unverified to score them anyway)")

    settings: dict[str, Any] = {
        "generated": os.path.abspath(args.generated),
        "prompts_csv": os.path.abspath(args.prompts_csv) if args.prompts_csv else None,
        "device": str(device),
        "batch_size": args.batch_size,
        "allow_incomplete": args.allow_incomplete,
        "allow_unverified": args.allow_unverified,
    }
    protocol: dict[str, Any] = {}

    # Load every network first, so that a missing weight fails before any image work.
    features = clip = None
    if not args.no_fid:
        from evaluation import fid as fidlib
        from evaluation.weights import load_inception

        net = load_inception(args.inception_weights, device)
        features = fidlib.FeatureMetrics(net, device)
        center_crop = not args.no_center_crop
        to_inception, resize, non_square = im.PROTOCOLS[args.protocol]
        fid_transform = functools.partial(to_inception, center_crop=center_crop)
        stats_meta = {"inception_sha256": sha256_file(args.inception_weights), "center_crop": center_crop,
                      "protocol": args.protocol}
        protocol["fid"] = {
            "protocol": args.protocol,
            "feature_network": os.path.abspath(args.inception_weights),
            "feature_network_sha256": stats_meta["inception_sha256"],
            "feature_network_is": identify("fid", stats_meta["inception_sha256"]),
            "features": features.features.num_features,
            "resize": ("centre crop to a square, then " if center_crop else "no crop, then ") + resize,
            "non_square": "centre-cropped to a square first (--no_center_crop: not)" if center_crop else non_square,
        }
    if not args.no_clip:
        from evaluation import clip_score as cliplib
        from evaluation.weights import load_clip

        model, tokenizer, image_processor = load_clip(args.clip_model, device)
        clip = cliplib.ClipScorer(model, tokenizer, device)
        protocol["clip"] = _model_record("clip", args.clip_model, cliplib.SCORE_CONVENTION, image_processor,
                                         max_tokens=cliplib.text_max_length(model))
    from evaluation import preference as preflib

    preference = {name: preflib.load(name, folder, device) for name, folder in _preference(args).items()}
    protocol.update({name: loaded.record for name, loaded in preference.items()})
    # CMMD: the CLIP image embeddings of this pass against the reference images' (read, or saved in the stats)
    cmmd_on = clip is not None and not args.no_cmmd and bool(args.reference_dir or args.reference_stats)
    reference_clip = None

    # What each image goes through; every group of images is extracted here, or by SLURM tasks (slices).
    transforms: dict[str, Any] = {}
    if features is not None:
        transforms["fid"] = fid_transform
    if clip is not None:
        transforms["clip"] = cliplib.ClipImagePreprocess(image_processor)
    transforms.update({name: loaded.preprocess for name, loaded in preference.items()})
    extractor = Extractor(features, clip, {name: loaded.scorer for name, loaded in preference.items()},
                          args.batch_size, args.num_workers)
    groups: list[tuple[str, Sequence[Any], list[str] | None, dict[str, Any]]] = []  # images: load_rgb's sources
    read_reference = bool(args.reference_dir) and not args.reference_stats and (features is not None or cmmd_on)
    if read_reference:
        ref_paths = gen.list_reference_images(args.reference_dir, args.reference_list)
        groups.append(("reference", ref_paths, None,
                       {k: v for k, v in transforms.items() if k == "fid" or (k == "clip" and cmmd_on)}))
    for i, (target, images, *_, prompts, _) in enumerate(folders):
        groups.append((f"configuration-{i:03d}", images, prompts, transforms))
    if task is not None:  # a SLURM task: extract its slice of every group, save it, and stop
        from evaluation import slurm_scoring

        slurm_scoring.extract_slice(task, groups, extractor)
        return {}
    if args.cluster == "slurm":
        from evaluation import slurm_scoring

        arrays = slurm_scoring.extract_on_slurm(args, argv, groups, _fingerprint(args, protocol))
    else:
        arrays = {name: extractor.extract(paths, prompts, group_transforms, name)
                  for name, paths, prompts, group_transforms in groups}

    reference: dict[str, Any] = {}
    if args.reference_stats and (features is not None or cmmd_on):
        from evaluation import fid as fidlib

        stats = fidlib.load_stats(args.reference_stats)
        reference.update(stats=os.path.abspath(args.reference_stats), images=stats.num_images or None)
        if features is not None:
            warnings += fidlib.check_stats_compatible(stats, stats_meta, args.reference_stats)
            fidlib.set_reference_stats(features, stats)
            if stats.features is None:
                warnings.append(f"reference statistics {args.reference_stats} hold no features: no KID")
        if cmmd_on:
            if stats.clip_embeddings is None:
                warnings.append(f"reference statistics {args.reference_stats} hold no CLIP embeddings: no CMMD")
            elif stats.meta.get("clip_model_sha256") != protocol["clip"]["model_sha256"]:
                warnings.append(f"reference statistics {args.reference_stats} hold the CLIP embeddings of another "
                                f"CLIP model: no CMMD")
            else:
                reference_clip = torch_from(stats.clip_embeddings)
    elif read_reference:
        ref = arrays["reference"]
        if features is not None:
            features.add(torch_from(ref["fid"]), real=True)
        if cmmd_on:
            reference_clip = torch_from(ref["clip_embedding"])
        reference.update(dir=os.path.abspath(args.reference_dir), images=len(ref_paths),
                         list=os.path.abspath(args.reference_list) if args.reference_list else None)
    if args.save_reference_stats:
        ref_stats = fidlib.reference_stats(features, stats_meta)  # type: ignore[arg-type]
        if reference_clip is not None:
            ref_stats.clip_embeddings = reference_clip.float().numpy()
            ref_stats.meta["clip_model_sha256"] = protocol["clip"]["model_sha256"]
        fidlib.save_stats(args.save_reference_stats, ref_stats)
        reference["saved_to"] = os.path.abspath(args.save_reference_stats)
    if features is not None:
        protocol["fid"]["reference"] = reference
    if reference_clip is not None:
        from evaluation import cmmd as cmmdlib

        protocol["cmmd"] = {"description": cmmdlib.DESCRIPTION, "sigma": cmmdlib.SIGMA, "scale": cmmdlib.SCALE,
                            "embeddings": f"CLIP model {protocol['clip']['model']} (the CLIP score's pass)",
                            "reference": reference, "reference_images": len(reference_clip)}

    configurations, per_image_rows = [], []
    for i, (target, images, ignored, missing_count, rows, matched, prompts, seed_start) in enumerate(folders):
        extracted = arrays[f"configuration-{i:03d}"]
        if features is not None:
            features.reset_generated()
            features.add(torch_from(extracted["fid"]), real=False)
        per_image = {name: extracted[name].tolist() for name in ("clip_score", *PREFERENCE_SCORES) if name in extracted}
        scores: dict[str, Any] = {"fid": None, "kid": None, "kid_std": None, "kid_subset_size": None,
                                  "clip_score": None, "cmmd": None, **{name: None for name in PREFERENCE_SCORES}}
        if features is not None:
            scores["fid"] = features.compute_fid()
            kid = features.compute_kid()
            if kid is not None:
                scores["kid"], scores["kid_std"], scores["kid_subset_size"] = kid
        if clip is not None:
            scores["clip_score"] = cliplib.clip_score(per_image["clip_score"])
        for name in preference:
            scores[name] = sum(per_image[name]) / len(images)
        if reference_clip is not None:
            scores["cmmd"] = cmmdlib.cmmd(reference_clip, torch_from(extracted["clip_embedding"]))
        intervals = {name: uncertainty.bootstrap_interval(values) for name, values in per_image.items()}
        if "clip_score" in intervals and intervals["clip_score"]:  # the score's mean is clamped at 0: so is its interval
            intervals["clip_score"] = [max(v, 0.0) for v in intervals["clip_score"]]
        configurations.append({
            "name": target.name,
            "folder": os.path.relpath(target.folder, args.generated) if record else ".",
            "overrides": target.overrides,
            **scores,
            "intervals": intervals,
            "seed_start": seed_start,
            "counts": {
                "generated_images": len(images),
                "missing_images": missing_count,
                "ignored_files": len(ignored),
                "prompt_rows": len(rows) if rows is not None else None,
                "prompts_with_images": len({r.index for r in matched if r is not None}) if rows is not None else None,
            },
        })
        per_image_rows.append([{"file": g.name or os.path.basename(g.path), "image_id": g.image_id,
                                "prompt_row": matched[i].index if matched and matched[i] is not None else None,
                                "seed": g.seed, **{name: values[i] for name, values in per_image.items()}}
                               for i, g in enumerate(images)])

    if features is not None:
        protocol["fid"]["reference_images"] = protocol["fid"]["reference"].get("images")
        sizes = sorted({c["kid_subset_size"] for c in configurations if c["kid_subset_size"]})
        if sizes:
            protocol["kid"] = {"subset_size": sizes[0] if len(sizes) == 1 else sizes, "subsets": fidlib.KID_SUBSETS,
                               "subset_rule": f"min({fidlib.KID_MAX_SUBSET_SIZE}, reference images, generated images)",
                               "seed": fidlib.KID_SEED, "kernel": "polynomial (x.y / D + 1)^3 (torchmetrics)",
                               "features": "the FID features (one pass over the images)"}
    if clip is not None:
        protocol["clip"].update(prompts=len(scored_prompts), prompts_over_max_tokens=cliplib.count_long_prompts(
            tokenizer, sorted(scored_prompts), protocol["clip"]["max_tokens"]))
        if protocol["clip"]["prompts_over_max_tokens"]:
            warnings.append(f"{protocol['clip']['prompts_over_max_tokens']} of {len(scored_prompts)} prompts are "
                            f"longer than {protocol['clip']['max_tokens']} CLIP tokens: scored on their beginning")
    protocol["intervals"] = uncertainty.protocol()

    first = configurations[0]
    result: dict[str, Any] = {k: first[k] for k in ("fid", "kid", "kid_std", "kid_subset_size", "clip_score", "cmmd",
                                                     *PREFERENCE_SCORES, "intervals")}
    seed_sets = uncertainty.seed_sets(configurations, record.axes) if record is not None else []
    if record is not None:
        result = {k: None for k in result}  # a sweep has no single score: see "configurations"
        result.update(sweep={"axes": record.axes}, configurations=configurations)
        if seed_sets:
            result["seed_sets"] = seed_sets
    else:
        settings["seed_start"] = first["seed_start"]
    counts = dict(first["counts"]) if record is None else {"configurations": len(configurations)}
    if "fid" in protocol:
        counts["reference_images"] = protocol["fid"]["reference_images"]
    result.update(
        verification={"images": sum(len(f[1]) for f in folders), "unverified": len(failed),
                       "allow_unverified": args.allow_unverified,
                       "check": "embedded provenance against the folder's record (provenance.made_with)"},
        counts=counts,
        protocol=protocol,
        settings=settings,
        warnings=warnings,
        versions=_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        elapsed_s=round(time.time() - started, 2),
    )
    _write_scores_files(args, folders, configurations, per_image_rows, seed_sets)
    return result


def _model_record(scorer: str, folder: str, score: str, image_processor: Any, **extra: Any) -> dict[str, Any]:
    """What metrics.json records of a CLIP model loaded from a local folder."""
    from evaluation.clip_score import describe_preprocessing
    from evaluation.preference import model_record
    from evaluation.weights import folder_weights_sha256

    return model_record(scorer, folder, folder_weights_sha256(folder), score, describe_preprocessing(image_processor),
                        **extra)


class Extractor:
    """What the scores are made of, per image and in order: Inception features (``fid``), L2-normalised CLIP
    image embeddings (``clip_embedding``), per-image scores (``clip_score``, ``pickscore``, ``hps``,
    ``imagereward``); numpy arrays. The same code runs in this process or, on a slice of the images, in a SLURM task (evaluation/slurm_scoring.py).
    ``preference``: name -> scorer (evaluation/preference.py), each fed the images of its own transform."""

    def __init__(self, features: Any, clip: Any, preference: dict[str, Any], batch_size: int, num_workers: int):
        self.features, self.clip, self.preference = features, clip, preference
        self.batch_size, self.num_workers = batch_size, num_workers

    def extract(self, paths: Sequence[Any], prompts: Sequence[str] | None, transforms: dict[str, Any],
                desc: str) -> dict[str, Any]:
        import torch

        from evaluation import images as im

        out: dict[str, list[Any]] = {}
        for indices, batch in im.iterate_batches(paths, transforms, self.batch_size, self.num_workers, desc):
            batch_prompts = [prompts[i] for i in indices] if prompts is not None else None
            if "fid" in batch:
                out.setdefault("fid", []).append(self.features.network_features(batch["fid"]))
            if "clip" in batch:
                embeddings = self.clip.image_embeddings(batch["clip"])
                out.setdefault("clip_embedding", []).append(embeddings)
                if batch_prompts is not None:
                    out.setdefault("clip_score", []).append(self.clip.scores(embeddings, batch_prompts))
            for name, scorer in self.preference.items():
                if name in batch and batch_prompts is not None:
                    out.setdefault(name, []).append(scorer.score_images(batch[name], batch_prompts))
        return {k: torch.cat(v).double().numpy() for k, v in out.items()}


def _fingerprint(args: argparse.Namespace, protocol: dict[str, Any]) -> str:
    """Everything that changes what the images are extracted into (SLURM slices are reused only under it)."""
    import hashlib
    import json

    what = {k: getattr(args, k) for k in ("reference_dir", "reference_list", "prompts_csv", "id_column",
                                          "prompt_column", "seed_start", "protocol", "no_center_crop", "no_cmmd",
                                          "allow_incomplete")}
    what.update(generated=os.path.abspath(args.generated),
                networks=[(protocol.get("fid") or {}).get("feature_network_sha256"),
                          (protocol.get("clip") or {}).get("model_sha256"),
                          *((protocol.get(name) or {}).get("model_sha256") for name in PREFERENCE_SCORES)])
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def torch_from(array: Any) -> Any:
    import torch

    return torch.as_tensor(array, dtype=torch.float64)


def _write_scores_files(args: argparse.Namespace, folders: list[Any], configurations: list[dict[str, Any]],
                        per_image_rows: list[list[dict[str, Any]]], seed_sets: list[dict[str, Any]]) -> None:
    """Each scored folder's scores.csv and scores.json (evaluation/scores_file.py), for evaluation.compare."""
    from evaluation.scores_file import write_scores

    group_of = {name: g for g in seed_sets for name in g["configurations"]}
    for (target, *_), c, rows in zip(folders, configurations, per_image_rows):
        columns = [k for k in ("clip_score", *PREFERENCE_SCORES) if rows and k in rows[0]]
        summary = {k: c[k] for k in ("name", "overrides", "fid", "kid", "kid_std", "cmmd", "clip_score",
                                     *PREFERENCE_SCORES, "intervals", "seed_start")}
        summary["metrics"] = os.path.abspath(args.out)
        summary["seed_set"] = group_of.get(c["name"])
        write_scores(target.folder, rows, columns, summary)


def write_json(data: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    replace_json(path, data)


def _scores_line(scores: dict[str, Any]) -> str:
    parts = [f"{k}={scores[k]:.4f}" for k in ("fid", "clip_score", "cmmd", *PREFERENCE_SCORES)
             if scores.get(k) is not None]
    if scores.get("kid") is not None:
        parts.insert(1, f"kid={scores['kid']:.5f}+-{scores['kid_std']:.5f}")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args, argv)
    write_json(result, args.out)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for c in result.get("configurations", []):
        print(f"{c['name']}: {_scores_line(c)} ({c['counts']['generated_images']} images)")
    if "configurations" in result:
        print(f"{len(result['configurations'])} configurations -> {args.out}")
    else:
        print(f"{_scores_line(result)} ({result['counts']['generated_images']} images) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
