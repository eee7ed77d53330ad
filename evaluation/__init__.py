"""Evaluation of generated images: COCO prompt preparation, FID / CLIP score, report.

Modules (each usable as plain functions; those with a ``main`` are CLIs run with ``python -m``):

* :mod:`evaluation.coco_prompts` -- COCO captions JSON -> ``prompts.csv`` (+ reference file list)   [CLI]
* :mod:`evaluation.generated`    -- find ``{image_id}_seed{seed}.png`` files, read the prompts CSV, match them
* :mod:`evaluation.images`       -- image loading and the preprocessing the feature networks need
* :mod:`evaluation.weights`      -- load the feature networks from local files only, with clear errors
* :mod:`evaluation.fid`          -- FID and KID (torchmetrics) from one Inception pass, reference statistics I/O
* :mod:`evaluation.clip_score`   -- CLIP score (torchmetrics) with a local transformers CLIP model
* :mod:`evaluation.metrics`      -- the metrics CLI, writes ``metrics.json`` (a run or a sweep folder)   [CLI]
* :mod:`evaluation.report`       -- report.json / report.md / report.html: table, FID-CLIP plot, samples [CLI]
* :mod:`evaluation.screenshot_report` -- the report as headless Chromium shows it (a PNG to look at)  [CLI]
"""
