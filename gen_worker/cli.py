"""submit.py's command line: parse, check everything, then hand the run to a launcher.

Nothing here imports torch or diffusers: a bad input is refused in about a second, before any
worker starts or any GPU is touched.
"""
import argparse
import os
import signal
import sys

from gen_worker.output import layout
from gen_worker.container.runtime import RUNTIMES
from gen_worker.errors import T2IError, UsageError
from gen_worker.gpus import visible_gpus
from gen_worker.model_source import ModelPathError, check_model_path
from gen_worker.prompts import PromptsError, fingerprint, load_samples
from gen_worker.output.record import prepare_output_dir
from gen_worker.output.summary import command_line
from gen_worker.spec import DEVICES, DTYPES, JobSpec


def build_parser():
    parser = argparse.ArgumentParser(
        prog="submit.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Generate one image per CSV prompt with a diffusers pipeline, one worker per GPU. "
                    "Sample i (CSV data row i) gets seed seed_start+i and is saved as "
                    "{image_id}_seed{seed}.png; rerunning the same command makes only what is missing.",
        epilog="SLURM runs: `submit.py status --output_dir D [--wait]` shows (or follows) the tasks of the "
               "run in D; `submit.py cancel --output_dir D [--task K ...]` cancels its jobs.")
    run = parser.add_argument_group("where to run")
    run.add_argument("--cluster", choices=("local", "slurm"), default="local",
                     help="local: one subprocess per GPU on this machine; slurm: submit through submitit")
    run.add_argument("--gpu_ids", nargs="+", default=None, metavar="ID",
                     help="GPUs to use, one worker each (local mode); default: every visible GPU. "
                          "With --device cpu they still set the number of workers")
    run.add_argument("--gpus", type=int, default=None,
                     help="number of SLURM tasks, one GPU each (slurm mode; None: 8)")
    run.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when a GPU is visible")
    run.add_argument("--cpu_threads", type=int, default=1,
                     help="torch CPU threads per worker; fixed so images do not depend on the number of workers")
    data = parser.add_argument_group("input and output")
    data.add_argument("--prompts_csv", required=True, help="CSV with a prompt column (prompt/caption/text) "
                                                           "and optionally an id column (image_id/id)")
    data.add_argument("--output_dir", required=True, help="folder for the images and the run's records")
    data.add_argument("--model_path", required=True, help="diffusers pipeline folder or hub id (safetensors only)")
    data.add_argument("--num_samples", type=int, default=None, help="first N rows of the CSV (default: all rows)")
    data.add_argument("--id_column", default=None, help="id column (default: image_id or id; none: row number)")
    data.add_argument("--prompt_column", default=None, help="prompt column (default: prompt, caption or text)")
    gen = parser.add_argument_group("generation settings (recorded in the output folder; a rerun must match)")
    gen.add_argument("--seed_start", type=int, default=42, help="seed of sample 0; sample i uses seed_start+i")
    gen.add_argument("--num_inference_steps", type=int, default=20, help="denoising steps")
    gen.add_argument("--guidance_scale", type=float, default=7.5, help="classifier-free guidance scale")
    gen.add_argument("--height", type=int, default=480, help="image height in pixels (multiple of 8)")
    gen.add_argument("--width", type=int, default=832, help="image width in pixels (multiple of 8)")
    gen.add_argument("--dtype", choices=DTYPES, default="bf16", help="weights and compute precision")
    gen.add_argument("--cfg_truncation_step", type=int, default=None, metavar="K",
                     help="turn classifier-free guidance off from step K on (later steps cost one forward "
                          "pass instead of two); 0: no guidance at all")
    gen.add_argument("--enable_half_frame", action="store_true",
                     help="video pipelines: generate half of --num_frames (no effect on image pipelines)")
    gen.add_argument("--num_frames", type=int, default=1,
                     help="frames asked of a video pipeline (the first one is saved); ignored by image pipelines")
    gen.add_argument("--negative_prompt", default=None, help="negative prompt for every sample (default: none)")
    gen.add_argument("--max_sequence_length", type=int, default=None,
                     help="text encoder sequence length, for pipelines that take it (default: the pipeline's)")
    gen.add_argument("--batch_size", type=int, default=1,
                     help="prompts per pipeline call, one generator (seed) per sample; images are the same for any "
                          "number of GPUs at a given batch size, but may differ in the last bits between batch sizes")
    gen.add_argument("--vae_tiling", action="store_true",
                     help="decode large images tile by tile to save memory (changes the images slightly at the seams)")
    gen.add_argument("--allow_settings_change", action="store_true",
                     help="add to an output folder made with other settings or prompts instead of refusing")
    speed = parser.add_argument_group(
        "speed (not recorded: like the GPU model, they may change the last bits of a pixel, not the image)")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the denoiser (unet/transformer): faster on GPU after a warm-up of minutes")
    speed.add_argument("--tf32", action="store_true",
                       help="TF32 matmuls on Ampere and newer GPUs: only --dtype fp32 is affected (faster, less precise)")
    speed.add_argument("--channels_last", action="store_true",
                       help="channels-last memory format for convolutional denoisers and VAEs (UNet models)")
    speed.add_argument("--vae_slicing", action="store_true",
                       help="decode the images of a batch one at a time: less memory at large --batch_size")
    _add_container_arguments(parser)
    _add_slurm_arguments(parser)
    return parser


def _add_slurm_arguments(parser):
    slurm = parser.add_argument_group("SLURM (--cluster slurm; --output_dir must be on a file system the nodes share)")
    slurm.add_argument("--slurm_mode", choices=("array", "tasks"), default="array",
                       help="array: a job array of --gpus tasks that start as GPUs free up; "
                            "tasks: one job of --gpus tasks (srun), all starting together")
    slurm.add_argument("--gpus_per_node", type=int, default=8, help="tasks mode: tasks per node (sets the node count)")
    slurm.add_argument("--array_parallelism", type=int, default=None,
                       help="array mode: at most this many tasks run at once (None: no cap)")
    slurm.add_argument("--partition", default=None, help="partition (None: the cluster's default partition)")
    slurm.add_argument("--account", default=None, help="account to charge")
    slurm.add_argument("--qos", default=None, help="quality of service")
    slurm.add_argument("--time", type=int, default=None,
                       help="time limit per task in minutes (None: 4320 = 3 days, or the partition's "
                            "limit if lower); a task that runs out is requeued and resumes")
    slurm.add_argument("--mem_gb", type=float, default=64, help="CPU memory per task (per GPU), in GB")
    slurm.add_argument("--cpus_per_task", type=int, default=8, help="CPU cores per task")
    slurm.add_argument("--constraint", default=None, help="node features, e.g. 'a100|h100'")
    slurm.add_argument("--exclude", default=None, help="nodes not to use, e.g. 'node[01-03]'")
    slurm.add_argument("--job_name", default="t2i-batch", help="SLURM job name")
    slurm.add_argument("--slurm_setup", action="append", default=None, metavar="LINE",
                       help="a shell line run before each task, e.g. 'module load cuda' (repeat for more)")
    slurm.add_argument("--sbatch_option", action="append", default=None, metavar="NAME[=VALUE]",
                       help="any other sbatch option, passed through, e.g. mail-type=END or reservation=r1 (repeatable)")
    slurm.add_argument("--wait", dest="wait", action="store_true", default=None,
                       help="after submitting, show one progress bar per task until the run ends "
                            "(None: wait when stdout is a terminal); Ctrl+C detaches, the jobs keep running")
    slurm.add_argument("--no_wait", dest="wait", action="store_false", default=None, help="submit and return")


def _check_mode_flags(args, parser):
    """A flag of the other mode is a mistake to point out, not to ignore."""
    if args.cluster == "slurm":
        if args.gpu_ids is not None:
            raise UsageError("--gpu_ids is for --cluster local; with --cluster slurm use --gpus N (the number of tasks)")
        return
    if args.gpus is not None:
        raise UsageError("--gpus is for --cluster slurm; with --cluster local use --gpu_ids (e.g. --gpu_ids 0 1)")
    slurm_group = next(g for g in parser._action_groups if g.title.startswith("SLURM"))
    given = [a.option_strings[0] for a in slurm_group._group_actions
             if a.dest != "wait" and getattr(args, a.dest) != a.default]
    if args.wait is not None:
        given.append("--wait" if args.wait else "--no_wait")
    if given:
        raise UsageError(f"{', '.join(given)} only applies to --cluster slurm")


def _add_container_arguments(parser):
    box = parser.add_argument_group("containers (every worker runs inside the image; see containers/README.md)")
    box.add_argument("--container", default=None, metavar="IMAGE",
                     help="image to run the workers in: an Apptainer .sif file or a docker/podman image "
                          "(e.g. t2i-batch:latest, built by containers/build_image.sh); default: no container")
    box.add_argument("--container_runtime", choices=("auto", *RUNTIMES), default="auto",
                     help="auto: apptainer (or singularity) for a .sif file, else podman if installed, else docker")
    box.add_argument("--container_bind", action="append", default=[], metavar="SRC[:DST]",
                     help="one more host path to show inside the container (repeatable); the output dir, the "
                          "prompts CSV, the model folder and the Hugging Face cache are bound at their own paths, "
                          "a bind that covers one of them with another DST moves it there")


def _check_numbers(args):
    positive = ("num_inference_steps", "height", "width", "num_frames", "cpu_threads", "max_sequence_length",
                "batch_size")
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1 (got {value})")
    for name in ("height", "width"):
        if getattr(args, name) % 8:
            raise UsageError(f"--{name} must be a multiple of 8 (got {getattr(args, name)})")
    if args.cfg_truncation_step is not None and args.cfg_truncation_step < 0:
        raise UsageError(f"--cfg_truncation_step must be 0 or more (got {args.cfg_truncation_step})")
    if args.guidance_scale < 0:
        raise UsageError(f"--guidance_scale must be 0 or more (got {args.guidance_scale})")
    if args.seed_start < 0:
        raise UsageError(f"--seed_start must be 0 or more (got {args.seed_start})")


def _check_output_dir(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--output_dir {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}.tmp")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise UsageError(f"cannot write to --output_dir {path}: {err.strerror}") from None


def build_spec(args):
    """Check every input; return (spec, samples). Raises UsageError with a one-line message."""
    _check_numbers(args)
    try:
        model_path = check_model_path(args.model_path)
        samples = load_samples(args.prompts_csv, args.seed_start, args.num_samples,
                               args.id_column, args.prompt_column)
    except (ModelPathError, PromptsError) as err:
        raise UsageError(str(err)) from None
    output_dir = os.path.abspath(args.output_dir)
    _check_output_dir(output_dir)
    spec = JobSpec(
        prompts_csv=os.path.abspath(args.prompts_csv), output_dir=output_dir, model_path=model_path,
        num_samples=len(samples), seed_start=args.seed_start, num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale, height=args.height, width=args.width, dtype=args.dtype,
        cfg_truncation_step=args.cfg_truncation_step, enable_half_frame=args.enable_half_frame,
        num_frames=args.num_frames, negative_prompt=args.negative_prompt,
        max_sequence_length=args.max_sequence_length, id_column=args.id_column,
        batch_size=args.batch_size, vae_tiling=args.vae_tiling, prompt_column=args.prompt_column,
        device=args.device, cpu_threads=args.cpu_threads, compile=args.compile, tf32=args.tf32,
        channels_last=args.channels_last, vae_slicing=args.vae_slicing, samples_fingerprint=fingerprint(samples))
    return spec, samples


def local_gpu_ids(args):
    """One CUDA_VISIBLE_DEVICES value per local worker ("" hides every GPU from a CPU worker)."""
    if args.gpu_ids:
        ids = [g.strip() for g in args.gpu_ids]
        if any(not g or "," in g for g in ids):
            raise UsageError("--gpu_ids takes GPU ids separated by spaces, e.g. --gpu_ids 0 1")
        if len(set(ids)) != len(ids):
            raise UsageError(f"--gpu_ids lists a GPU twice: {' '.join(ids)}")
        return ids
    found = visible_gpus()
    if args.device == "cpu" or (args.device == "auto" and not found):
        return [""]
    if not found:
        raise UsageError("--device cuda, but no GPU is visible (nvidia-smi finds none, or CUDA_VISIBLE_DEVICES hides them)")
    return found


def container_for(args, spec, same_path=()):
    """The checked Container of --container (None without it); ContainerError when it cannot work."""
    if not args.container:
        if args.container_runtime != "auto" or args.container_bind:
            raise UsageError("--container_runtime and --container_bind need --container IMAGE")
        return None
    from gen_worker.container.runtime import prepare
    return prepare(args.container, args.container_runtime, args.container_bind, spec, args.cluster, same_path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("status", "cancel"):
        from gen_worker.slurm.status import main as status_main
        return status_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # A SIGTERM (kill, timeout) stops the run as cleanly as Ctrl+C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = command_line(["python", sys.argv[0] or "submit.py", *argv])
    from gen_worker.slurm.record import refuse_if_jobs_alive
    try:
        _check_mode_flags(args, parser)
        if args.cluster == "slurm":
            from gen_worker.slurm.submit import slurm_options, submit_to_slurm
            options = slurm_options(args)  # --device auto stays auto: the submit host may have no GPU
            spec, samples = build_spec(args)
            # submitit's folder is named by its host path in the sbatch script: seen there inside too.
            container = container_for(args, spec, same_path=[os.path.join(spec.output_dir, layout.SUBMITIT_DIR)])
            return submit_to_slurm(spec, samples, options, command, args.allow_settings_change, container)
        gpu_ids = local_gpu_ids(args)
        if args.device == "auto":
            args.device = "cpu" if gpu_ids == [""] else "cuda"
        spec, samples = build_spec(args)
        # SLURM tasks queued into this folder earlier may start any time: not together with a local run.
        # Checked first (running tasks hold the lock, whose message would name their long-gone
        # submitter), and again under the lock.
        refuse_if_jobs_alive(spec.output_dir, required=False)
        container = container_for(args, spec)
        lock = prepare_output_dir(spec, samples, args.allow_settings_change,
                                  check=lambda: refuse_if_jobs_alive(spec.output_dir, required=False))
    except T2IError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from gen_worker.local import run_local
    try:
        return run_local(spec, samples, gpu_ids, lock, command, container)
    finally:
        lock.release()
