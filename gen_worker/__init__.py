"""t2i-batch: a file of prompts -> K PNGs per prompt, over many GPUs (local or SLURM).

The map, grouped by where the code runs:

  On the submit host (never imports torch: bad input is refused in a second)
    cli.py            submit.py's command line: parse, check, hand over to a launcher
    spec.py           JobSpec: every setting, declared once (type, default, help, checks,
                      recorded or not, applied when the pipeline loads or not); the argparse
                      flags are made from it (flags.py)
    families.py       what t2i-batch knows of each diffusers pipeline class: its tiny_model family,
                      default guidance (read from diffusers' source), CFG truncation layout, image
                      or video, denoisers, speed levers; read by the submitter, the worker and
                      docs/families.md
    flags.py          dataclass fields -> argparse flags, checks, the recorded and load-time lists
    errors.py         T2IError: every user-facing error (one line, exit 2)
    prompts.py        the prompts file (CSV, TSV, JSONL, Parquet) -> Samples (index, row, k, id,
                      prompt, seed, file name, the row's other columns)
    naming.py         {image_id}_seed{seed}.png, safe names for unsafe ids, the GenEval layout's
                      <row>/samples/<k>.png
    sharding.py       which samples worker k of N makes (round-robin of batch-size blocks)
    sweep.py          --sweep NAME=V1,V2: the configurations, each checked as a plain run
    model_source.py   --model_path checks (folder or hub id, safetensors only)
    model_check.py    the model's identity (content fingerprint) and completeness, from its
                      files: configs and safetensors headers, no torch
    gpus.py           the visible GPUs
    library_logs.py   library log lines a user cannot act on, filtered (transformers' torchvision notice)
    image_tools.py    submit.py show / reproduce: an image's provenance, the image made again
    tiny_model.py     tiny random-weight pipelines, offline (demo, tests): --arch sd, sdxl, sd3,
                      flux, pixart, sana, wan, wan22
    tiny_models/      its builders, one per family: text.py (tokenizers, text encoders),
                      unet.py (sd, sdxl), dit.py (sd3, flux, pixart, sana), video.py (wan, wan22)
    slurm_task.py     import shim: jobs queued before the layout change unpickle through it
    __main__.py       python -m gen_worker: the same as submit.py
    env_settings.py   run_full_evaluation.sh: environment variables named after JobSpec's flags
                      (GUIDANCE_SCALE, ...) -> submit.py's arguments
    local.py          --cluster local: one worker subprocess per GPU, progress bars
    slurm/            --cluster slurm: options.py (its flags), submit.py (checks with the
                      cluster, submitit), task.py (what a SLURM task runs), status.py
                      (status, cancel, --wait), record.py (logs/slurm_jobs.json),
                      commands.py (squeue, scancel, scontrol, sinfo, sbatch --test-only)
    container/        --container: runtime.py (apptainer/docker/podman command lines,
                      checks), binds.py (paths inside), slurm_launcher.py (the python
                      submitit runs in a SLURM task)

  In the output folder (used by the submitter, the workers and evaluation/ alike)
    output/           layout.py (every file name), atomic_files.py (write-then-link),
                      lock.py (one run per folder), record.py (settings + manifest, resume
                      check, quarantine), verification_cache.py (which images were found right,
                      against which manifest row and settings), provenance.py (what each PNG says
                      it is, its pixels' hash),
                      png_file.py (PNG chunks; is a file whole), summary.py, progress.py,
                      progress_bars.py, sweep_record.py (sweep.json: a sweep's configurations),
                      claims.py (--schedule dynamic: the block queue, leases, run.json)

  In each worker process, on its GPU (python -m gen_worker.worker, or a SLURM task)
    worker/           loop.py (the generation loop), pipeline.py (load diffusers, call it),
                      pipeline_cache.py (a sweep's worker loads each model once),
                      oom.py (split a block that runs out of memory), image_writer.py
                      (background writer threads), png.py (PNG encoding off the GIL),
                      watch.py (is its generation making progress: the lease's heartbeat, the
                      watchdog)

The path of one sample: submit.py -> cli.main -> build_spec (spec.JobSpec, prompts.load_samples)
-> output.record.prepare_output_dir (lock, settings, manifest) -> local.run_local or
slurm.submit.submit_to_slurm -> worker.loop.run_worker (sharding.worker_blocks: its blocks)
-> worker.pipeline.ImageMaker.make (one generator per seed) -> worker.image_writer ->
output.atomic_files.save_png_once -> Sample.file_name ({image_id}_seed{seed}.png, or
<row:05d>/samples/<k:04d>.png with --layout geneval).
"""
