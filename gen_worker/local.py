"""Local mode: one worker subprocess per GPU on this machine, each seeing only its own GPU; launched from a
plan (plan.py) and followed with one progress bar per worker until the run ends."""
import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from gen_worker import flags
from gen_worker.atomic_files import replace_file
from gen_worker.container.runtime import Container
from gen_worker.errors import UsageError
from gen_worker.gpus import select_gpus, visible_gpus
from gen_worker.output import layout
from gen_worker.output.prepare import PreparedRun
from gen_worker.output.progress_bars import ProgressBars
from gen_worker.output.record import existing_images
from gen_worker.output.summary import exit_status, final_lines, write_run_summary
from gen_worker.schedule import schedule_of
from gen_worker.schedule.dynamic import FINISH_GRACE_SECONDS, every_block_done, stopped_late

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_GRACE_SECONDS = 10
PR_SET_PDEATHSIG = 1


def _in_own_group_dying_with_parent() -> None:
    """Runs in the child before exec. Its own process group: stopping the worker stops what it started too
    (torch.compile's workers, a container client). If the submitter dies (even kill -9), it gets SIGTERM."""
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_worker(spec_paths: str | Sequence[str], log_dir: str, worker_index: int, num_workers: int,
                 cuda_visible_devices: str, container: Container | None = None,
                 name: str | None = None) -> subprocess.Popen[bytes]:
    """One worker process making every spec of spec_paths (a sweep's configurations) in turn, logging to
    log_dir/logs/; with a container, `name` is the container's (so that it can be removed)."""
    spec_paths = [spec_paths] if isinstance(spec_paths, str) else list(spec_paths)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=cuda_visible_devices, PYTHONUNBUFFERED="1")
    where, cwd = "", None
    if container is None:
        # python -m puts the working folder first on sys.path: started elsewhere, a worker would import any
        # other gen_worker found there (the submit folder of another checkout).
        python, cwd = [sys.executable], PACKAGE_PARENT
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    else:  # the image's own Python environment: apptainer would pass these through
        python = container.prefix(cuda_visible_devices, name, label=log_dir)
        spec_paths = [container.path(p) for p in spec_paths]
        for key in ("PYTHONPATH", "PYTHONHOME"):
            env.pop(key, None)
        where = f" in {container.runtime} {container.image}" + (f" ({name})" if name else "")
    log_path = layout.worker_log(log_dir, worker_index)
    with open(log_path, "ab") as log:
        try:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} worker {worker_index}/{num_workers} "
                      f"CUDA_VISIBLE_DEVICES={cuda_visible_devices}{where}\n".encode())
            log.flush()
        except OSError as err:  # a full disk: name the file
            err.filename = log_path
            raise
        return subprocess.Popen(
            [*python, "-m", "gen_worker.worker", *(arg for p in spec_paths for arg in ("--spec", p)),
             "--worker_index", str(worker_index), "--num_workers", str(num_workers)],
            env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_in_own_group_dying_with_parent)


def remove_containers(container: Container | None, names: Sequence[str]) -> None:
    """A killed `podman/docker run` client leaves its container running: remove it by name."""
    command = container.remove_command(names) if container else None
    if command:
        try:
            subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _signal_group(p: subprocess.Popen[bytes], signum: int) -> None:
    """Signal a worker's process group; only while the worker is not reaped (its id cannot be reused)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signum)
        except ProcessLookupError:
            pass


def stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Ask every worker to stop (they delete their half-written file), then kill the process groups of
    those still there after STOP_GRACE_SECONDS (a worker stuck in a GPU call never runs its SIGTERM handler).
    One that does not die either (stuck inside the kernel: a driver call) is left; its returncode stays None."""
    for p in procs:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(p, signal.SIGKILL)
            try:
                p.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                pass


def _kill_on_next_signal(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Once stopping: a second Ctrl+C (or SIGTERM) kills the workers instead of unwinding the submitter,
    which still writes the summary and prints what to rerun."""
    def kill(signum: int, frame: object) -> None:
        for p in procs:
            _signal_group(p, signal.SIGKILL)
    signal.signal(signal.SIGINT, kill)
    signal.signal(signal.SIGTERM, kill)


def _tail(path: str, lines: int = 15) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readlines()[-lines:]
    except OSError:
        return []


def check_gpu_ids(args: argparse.Namespace) -> list[str]:
    """One CUDA_VISIBLE_DEVICES value per local worker ("" hides every GPU from a CPU worker)."""
    if args.gpu_ids:
        flags.refuse_unless_utf8("--gpu_ids", args.gpu_ids)
        ids = [g.strip() for g in args.gpu_ids]
        if any(not g or "," in g for g in ids):
            raise UsageError("--gpu_ids takes GPU ids separated by spaces, e.g. --gpu_ids 0 1")
        if len(set(ids)) != len(ids):
            raise UsageError(f"--gpu_ids lists a GPU twice: {' '.join(ids)}")
        negative = [g for g in ids if g.startswith("-")]
        if negative:
            raise UsageError(f"--gpu_ids {negative[0]}: GPU ids are 0 or more (see nvidia-smi)")
        visible = visible_gpus()
        if visible:  # indices into the visible GPUs, as torch counts them
            return select_gpus(ids, visible)
        if args.device != "cpu":
            raise UsageError(f"--gpu_ids {' '.join(ids)}, but no GPU is visible (nvidia-smi finds none, or "
                             "CUDA_VISIBLE_DEVICES hides them); with --device cpu they set the number of CPU workers")
        return ids
    found = visible_gpus()
    if args.device == "cpu" or (args.device == "auto" and not found):
        return [""]
    if not found:
        raise UsageError("--device cuda, but no GPU is visible (nvidia-smi finds none, or CUDA_VISIBLE_DEVICES hides them)")
    return found


def _bar_counts(run: PreparedRun, num_workers: int, on_disk: set[str]) -> tuple[list[int], list[int]]:
    """Each worker's bar for one folder: (totals, images already there)."""
    spec, samples = run.spec, run.samples
    shares = schedule_of(spec).shares(len(samples), spec.block_size(), num_workers)
    if shares is not None:
        return [len(share) for share in shares], [sum(samples[i].file_name in on_disk for i in share) for share in shares]
    # claimed as they go: each bar is what its worker made of what was missing
    return [sum(s.file_name not in on_disk for s in samples)] * num_workers, [0] * num_workers


def run_local(runs: Sequence[PreparedRun], gpu_ids: Sequence[str], command: str, container: Container | None = None,
              join: bool = False, log_dir: str | None = None) -> int:
    """Run one worker per entry of gpu_ids (a CUDA_VISIBLE_DEVICES value each), each inside
    `container` if given (a container.Container); returns the exit status. Every worker goes through
    every run in `runs` (a sweep's configurations). log_dir: where the workers' logs go (default: the
    only run's folder; a sweep's top folder).

    join: add the workers to the dynamic run under way in the (only) run's folder."""
    started = time.time()
    num_workers = len(gpu_ids)
    log_dir = log_dir or runs[0].spec.output_dir
    indices: list[int] = []
    spec_paths = []
    for run in runs:
        spec = run.spec
        schedule = schedule_of(spec)
        these = schedule.join(spec, num_workers) if join else schedule.start(spec, num_workers)
        if indices and these != indices:  # fresh folders all give 0..N-1
            raise RuntimeError(f"worker indices {these} in {spec.output_dir}, {indices} elsewhere")
        indices = these
        # A joining submitter's spec may differ in what is not recorded (lease, threads): its own file.
        spec_path = os.path.join(spec.output_dir, layout.LOGS_DIR, f"spec_join{indices[0]}.json" if join else "spec.json")
        worker_spec = container.inside_spec(spec) if container else spec
        replace_file(spec_path, worker_spec.to_json().encode("utf-8"))
        spec_paths.append(spec_path)
    on_disk = [existing_images(run.spec.output_dir) for run in runs]
    if not join and all(s.file_name in there for run, there in zip(runs, on_disk) for s in run.samples):
        # A no-op rerun: no worker to start (each would read the prompts again only to find nothing to make).
        return _nothing_left(runs, on_disk, command, started)
    names = [container.new_name(k) for k in indices] if container else []
    labels = [f"GPU {g}" if g else "CPU" for g in gpu_ids]
    counts = [_bar_counts(run, num_workers, there) for run, there in zip(runs, on_disk)]
    totals = [sum(c[0][k] for c in counts) for k in range(num_workers)]
    done = [sum(c[1][k] for c in counts) for k in range(num_workers)]

    for run in runs:
        run.lock.downgrade_to_shared()  # workers share it; a second submitter is still refused
    procs = [start_worker(spec_paths, log_dir, k, num_workers, g, container, names[i] if names else None)
             for i, (k, g) in enumerate(zip(indices, gpu_ids))]
    bars = ProgressBars([run.spec.output_dir for run in runs], labels, totals, done, worker_indices=indices)
    # Dynamic runs: each folder's blocks not done yet (a static run has no queue to tell: its workers end
    # when their shares are made).
    # Each folder's blocks not done yet, where the schedule can tell (else the workers end when their shares are made).
    left: dict[str, set[int]] | None = {}
    for run, there in zip(runs, on_disk):
        blocks = schedule_of(run.spec).blocks_left(run.spec.output_dir, [s.file_name for s in run.samples],
                                                   run.spec.block_size(), there)
        if blocks is None or left is None:
            left = None
        else:
            left[run.spec.output_dir] = blocks
    interrupted = False
    finished_at = None
    stragglers: dict[int, str] = {}  # position: how it was stopped
    try:
        while any(p.poll() is None for p in procs):
            bars.refresh()
            if left is not None and every_block_done(left):
                finished_at = finished_at or time.monotonic()
                if time.monotonic() - finished_at > FINISH_GRACE_SECONDS:
                    stragglers = _stop_stragglers(procs)
                    break
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        _kill_on_next_signal(procs)
        print("\nStopping the workers (Ctrl+C again kills them at once)...", file=sys.stderr)
        stop_workers(procs)
    finally:
        bars.refresh()
        bars.close()
        if interrupted or any(p.returncode != 0 for p in procs):
            remove_containers(container, names)

    workers: list[dict[str, Any]] = [{"label": label, "gpu_id": g, "exit_code": p.returncode, "worker_index": k}
                                     for label, g, p, k in zip(labels, gpu_ids, procs, indices)]
    for position, how in stragglers.items():
        workers[position]["stopped"] = how
    summaries = [write_run_summary(run.spec.output_dir, [s.file_name for s in run.samples], workers, started, command,
                                   interrupted, schedule=run.spec.schedule,
                                   judged_by_folder=schedule_of(run.spec).judged_by_folder,
                                   already_there=sum(s.file_name in there for s in run.samples), logs_in=log_dir)
                 for run, there in zip(runs, on_disk)]
    for w in workers:
        if w["exit_code"] not in (0, None) and not interrupted:
            print(f"---- last lines of {w['label']}'s log:", file=sys.stderr)
            print("".join(_tail(layout.worker_log(log_dir, w["worker_index"]))).rstrip(), file=sys.stderr)
    for line in _final_lines(summaries, len(runs) > 1):
        print(line, file=sys.stderr)
    if interrupted:
        # The run is over: a Ctrl+C arriving now, while Python exits (it restores the default handler,
        # which kills the process), must not turn exit status 130 into death by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return 130
    workers_ok = all(w["exit_code"] == 0 for w in workers)
    return max(exit_status(summary, workers_ok) for summary in summaries)


def _nothing_left(runs: Sequence[PreparedRun], on_disk: Sequence[set[str]], command: str, started: float) -> int:
    """Every image of every run is on disk (the resume check kept them): the summaries, with no worker."""
    summaries = [write_run_summary(run.spec.output_dir, [s.file_name for s in run.samples], [], started, command,
                                   schedule=run.spec.schedule, judged_by_folder=schedule_of(run.spec).judged_by_folder,
                                   already_there=len(run.samples), on_disk=there)
                 for run, there in zip(runs, on_disk)]
    for line in _final_lines(summaries, len(runs) > 1):
        print(line, file=sys.stderr)
    return max(exit_status(summary, True) for summary in summaries)


def _stop_stragglers(procs: Sequence[subprocess.Popen[bytes]]) -> dict[int, str]:
    """Every block is done, yet these workers still run (stuck in a GPU call; their blocks were taken over):
    stop them, so that the run ends. Returns {position: what happened}, for the last lines."""
    running = [i for i, p in enumerate(procs) if p.poll() is None]
    stop_workers(procs)
    return {i: stopped_late(_how_it_ended(procs[i])) for i in running}


def _how_it_ended(p: subprocess.Popen[bytes]) -> str:
    if p.returncode is None:
        return f"SIGKILL did not end it either (pid {p.pid}: stuck in the kernel?)"
    if p.returncode == -signal.SIGKILL:
        return f"killed (SIGTERM did not end it within {STOP_GRACE_SECONDS} s)"
    return "stopped"


def _final_lines(summaries: Sequence[dict[str, Any]], sweep: bool) -> list[str]:
    """A plain run's last lines; a sweep's, one block per configuration, the rerun command once at the end."""
    if not sweep:
        return final_lines(summaries[0])
    lines = []
    for summary in summaries:
        name = os.path.basename(summary["output_dir"])
        lines += [f"[{name}] {line}" for line in final_lines(summary, rerun_hint=False)]
    missing = sum(s["missing"] for s in summaries)
    if missing:
        why = "interrupted" if summaries[0]["interrupted"] else "not complete"
        lines += [f"Sweep {why}: {missing} images missing. Rerun the same command to make only those:",
                  f"  {summaries[0]['command']}"]
    return lines
