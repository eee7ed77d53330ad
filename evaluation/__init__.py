"""Evaluation of generated images: COCO prompt preparation, FID / CLIP score, report.

Modules (each usable as plain functions; those with a ``main`` are CLIs run with ``python -m``):

* :mod:`evaluation.coco_prompts` -- COCO captions JSON -> ``prompts.csv`` (+ reference file list)   [CLI]
* :mod:`evaluation.generated`    -- find ``{image_id}_seed{seed}.png`` files or tar shard members, read the
  prompts CSV, match them
* :mod:`evaluation.verification` -- each image's embedded provenance against its folder's record, before scoring
* :mod:`evaluation.images`       -- image loading (files or shard members) and the networks' preprocessing
* :mod:`evaluation.weights`      -- load the feature networks from local files only; which network a file is (sha256)
* :mod:`evaluation.fid`          -- FID and KID (torchmetrics) from one Inception pass, reference statistics I/O
* :mod:`evaluation.clip_score`   -- CLIP score (torchmetrics' convention) per image, and CLIP image embeddings
* :mod:`evaluation.cmmd`         -- CMMD (RBF MMD of CLIP embeddings, the paper's constants)
* :mod:`evaluation.uncertainty`  -- bootstrap intervals, paired differences, mean and std over seed sets
* :mod:`evaluation.scores_file`  -- the per-image scores of a scored folder (scores.csv, scores.json)
* :mod:`evaluation.slurm_scoring` -- --cluster slurm: array tasks extract slices of the images, joined here
* :mod:`evaluation.compare`      -- two scored configurations of the same prompts and seeds, image by image [CLI]
* :mod:`evaluation.metrics`      -- the metrics CLI, writes ``metrics.json`` (a run or a sweep folder)   [CLI]
* :mod:`evaluation.report`       -- report.json / report.md / report.html: table, FID-CLIP plot, samples [CLI]
* :mod:`evaluation.screenshot_report` -- the report as headless Chromium shows it (a PNG to look at)  [CLI]
"""
