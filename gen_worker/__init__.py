"""t2i-batch: a file of prompts -> K PNGs per prompt, over many GPUs (local or SLURM).

The map, in the order a run goes through it: submit -> plan -> launch -> worker -> output.

  Submit: the command line (never imports torch: bad input is refused in a second)
    __main__.py       python -m gen_worker: the same as submit.py
    cli.py            submit.py's command line: the flags, the subcommands, --config, the hand-over to plan.py
    api.py            generate(): the same settings as keyword arguments, the same checks and run; its
                      Result read from the output folder; SlurmRun (status, wait, cancel) with wait=False
    campaign.py       --config campaign.toml: flags by name, [sweep] lists, [[run]] tables -> one
                      command line per run; the file recorded in each run's logs/
    named_settings.py settings by name (keywords, a campaign file's keys) -> argv, names and types
    pack.py           submit.py pack / unpack: a finished folder from PNG files to tar shards and back
                      checked against the parser's flags
    spec.py           JobSpec: every setting, declared once (type, default, help, checks,
                      recorded or not, applied when the pipeline loads or not); the argparse
                      flags are made from it (flags.py)
    flags.py          dataclass fields -> argparse flags, checks, the recorded and load-time lists
    errors.py         T2IError: every user-facing error (one line, exit 2; run_cli)
    image_tools.py    submit.py show / reproduce: an image's provenance, the image made again
    env_settings.py   run_full_evaluation.sh: environment variables named after JobSpec's flags

  Plan: what the run is, checked, its folders prepared
    plan.py           the run planner: the specs (one run or a sweep's configurations), the
                      container, each folder prepared or the run under way joined; then the
                      launcher its target names
    prompts.py        the prompts file (CSV, TSV, JSONL, Parquet) -> Samples (index, row, k, id,
                      prompt, seed, file name, the row's other columns)
    naming.py         {image_id}_seed{seed}.png, safe names for unsafe ids, the GenEval layout's
                      <row>/samples/<k>.png
    sweep.py          --sweep NAME=V1,V2: the configurations, each checked as a plain run
    model_source.py   --model_path checks (folder or hub id, safetensors only)
    model_check.py    the model's identity (content fingerprint) and completeness, from its
                      files: configs and safetensors headers, no torch
    gpus.py           the visible GPUs
    levers.py         the speed levers (--cache, --attention_backend, --quantize, --offload, --compile
                      regional): their values, and what refuses them before a worker starts
    families.py       what t2i-batch knows of each diffusers pipeline class: its tiny_model family,
                      default guidance (read from diffusers' source), CFG truncation layout, image
                      or video, denoisers, speed levers; read by the submitter, the worker and
                      docs/families.md
    schedule/         which worker makes which block: interface.py (Schedule, WorkerShare),
                      static.py (fixed round-robin shares), dynamic.py (blocks claimed as the
                      workers go, take-over, joins), claims.py (its queue in the output folder:
                      claims, leases, heartbeats)

  Launch: start the workers and follow them
    local.py          --cluster local: one worker subprocess per GPU, progress bars
    slurm/            --cluster slurm: options.py (its flags), submit.py (checks with the
                      cluster, submitit), task.py (what a SLURM task runs), status.py
                      (status, cancel, --wait), record.py (logs/slurm_jobs.json),
                      commands.py (squeue, scancel, scontrol, sinfo, sbatch --test-only)
    slurm_task.py     import shim: jobs queued before the layout change unpickle through it
    container/        --container: runtime.py (apptainer/docker/podman command lines,
                      checks), binds.py (paths inside), slurm_launcher.py (the python
                      submitit runs in a SLURM task), pyxis.py (--container_runtime pyxis:
                      the srun --container-image line and its environment)

  Worker: each worker process, on its GPU (python -m gen_worker.worker, or a SLURM task)
    worker/           loop.py (the generation loop), pipeline.py (load diffusers, call it),
                      pipeline_cache.py (a sweep's worker loads each model once),
                      levers.py (the speed levers applied: at load, or switched per
                      configuration), oom.py (split a block that runs out of memory), image_writer.py
                      (background writer threads), png.py (PNG encoding off the GIL),
                      shard_writer.py (--output_format tar: a shard gathered, then written whole),
                      watch.py (is its generation making progress: the lease's heartbeat, the
                      watchdog)
    library_logs.py   library log lines a user cannot act on, filtered (transformers' torchvision notice)
    tiny_model.py     tiny random-weight pipelines, offline (demo, tests): --arch sd, sdxl, sd3,
                      flux, pixart, sana, wan, wan22
    tiny_models/      its builders, one per family: text.py (tokenizers, text encoders),
                      unet.py (sd, sdxl), dit.py (sd3, flux, pixart, sana), video.py (wan, wan22)

  Output: the output folder (read and written by the submitter, the workers, `status` and evaluation/)
    output/           layout.py (every file name), record.py (the settings record, the manifest,
                      the images there: plain readers), prepare.py (a folder made ready for a
                      run: the rerun checks, the resume check, quarantine), verification_cache.py
                      (which images were found right, against which manifest row and settings),
                      provenance.py (what each PNG says it is, its pixels' hash), png_file.py (PNG
                      chunks; is a file whole), shards.py (the tar format's WebDataset shards:
                      write, index, read), shard_check.py (their resume check; a folder keeps its
                      format), lock.py (one run per folder), summary.py,
                      progress.py, progress_bars.py, sweep_record.py (sweep.json)
    atomic_files.py   writes that a crash never leaves half-done (write, then link or rename)

The path of one sample: submit.py -> cli.main -> plan.run (plan.build_spec: spec.JobSpec,
prompts.load_samples; output.prepare.prepare_output_dir: lock, settings, manifest, resume check)
-> local.run_local or slurm.submit.submit_to_slurm (schedule: the workers' indices) ->
worker.loop.run_worker (schedule's WorkerShare: its blocks) -> worker.pipeline.ImageMaker.make
(one generator per seed) -> worker.image_writer -> worker.png.save_png_once -> Sample.file_name
({image_id}_seed{seed}.png, or <row:05d>/samples/<k:04d>.png with --layout geneval).
"""


def __getattr__(name: str) -> object:
    """`from gen_worker import generate`, imported when asked for: `import gen_worker` stays light (no torch)."""
    if name == "generate":
        from gen_worker.api import generate
        return generate
    raise AttributeError(f"module 'gen_worker' has no attribute {name!r}")
