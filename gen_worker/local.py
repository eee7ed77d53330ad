"""Local mode: one worker subprocess per GPU on this machine, each seeing only its own GPU."""
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from gen_worker.container.runtime import Container
from gen_worker.output import claims, layout
from gen_worker.output.atomic_files import replace_file
from gen_worker.output.lock import RunLock
from gen_worker.output.progress_bars import ProgressBars
from gen_worker.output.record import existing_images
from gen_worker.output.summary import exit_status, final_lines, write_run_summary
from gen_worker.prompts import Sample
from gen_worker.sharding import worker_indices
from gen_worker.spec import JobSpec

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_GRACE_SECONDS = 10
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: if the submitter dies (even kill -9), the worker gets SIGTERM."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_worker(spec_path: str, output_dir: str, worker_index: int, num_workers: int, cuda_visible_devices: str,
                 container: Container | None = None, name: str | None = None) -> subprocess.Popen[bytes]:
    """One worker process; with a container, `name` is the container's (so that it can be removed)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=cuda_visible_devices, PYTHONUNBUFFERED="1")
    where = ""
    if container is None:
        python = [sys.executable]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    else:  # the image's own Python environment: apptainer would pass these through
        python = container.prefix(cuda_visible_devices, name, label=output_dir)
        spec_path = container.path(spec_path)
        for key in ("PYTHONPATH", "PYTHONHOME"):
            env.pop(key, None)
        where = f" in {container.runtime} {container.image}" + (f" ({name})" if name else "")
    log_path = layout.worker_log(output_dir, worker_index)
    with open(log_path, "ab") as log:
        try:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} worker {worker_index}/{num_workers} "
                      f"CUDA_VISIBLE_DEVICES={cuda_visible_devices}{where}\n".encode())
            log.flush()
        except OSError as err:  # a full disk: name the file
            err.filename = log_path
            raise
        return subprocess.Popen(
            [*python, "-m", "gen_worker.worker", "--spec", spec_path,
             "--worker_index", str(worker_index), "--num_workers", str(num_workers)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent)


def remove_containers(container: Container | None, names: Sequence[str]) -> None:
    """A killed `podman/docker run` client leaves its container running: remove it by name."""
    command = container.remove_command(names) if container else None
    if command:
        try:
            subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass


def stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Ask every worker to stop (they delete their half-written file), then kill stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _kill_on_next_signal(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Once stopping: a second Ctrl+C (or SIGTERM) kills the workers instead of unwinding the submitter,
    which still writes the summary and prints what to rerun."""
    def kill(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.kill()
    signal.signal(signal.SIGINT, kill)
    signal.signal(signal.SIGTERM, kill)


def _tail(path: str, lines: int = 15) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readlines()[-lines:]
    except OSError:
        return []


def run_local(spec: JobSpec, samples: Sequence[Sample], gpu_ids: Sequence[str], lock: RunLock, command: str,
              container: Container | None = None, join: bool = False) -> int:
    """Run one worker per entry of gpu_ids (a CUDA_VISIBLE_DEVICES value each), each inside
    `container` if given (a container.Container); returns the exit status.

    lock: held exclusively (a new run), or shared with `join` (workers added to the dynamic run under way)."""
    started = time.time()
    output_dir = spec.output_dir
    num_workers = len(gpu_ids)
    indices = claims.join_run(spec, num_workers) if join else claims.start_run(spec, num_workers)
    # A joining submitter's spec may differ in what is not recorded (lease, threads): its own file.
    spec_path = os.path.join(output_dir, layout.LOGS_DIR, f"spec_join{indices[0]}.json" if join else "spec.json")
    worker_spec = container.inside_spec(spec) if container else spec
    replace_file(spec_path, worker_spec.to_json().encode("utf-8"))
    names = [container.new_name(k) for k in indices] if container else []
    labels = [f"GPU {g}" if g else "CPU" for g in gpu_ids]
    on_disk = existing_images(output_dir)
    if spec.schedule == "static":
        shares = [worker_indices(len(samples), k, num_workers, spec.batch_size) for k in range(num_workers)]
        totals = [len(share) for share in shares]
        done = [sum(samples[i].file_name in on_disk for i in share) for share in shares]
    else:  # each bar: what its worker made of what was missing
        totals, done = [sum(s.file_name not in on_disk for s in samples)] * num_workers, [0] * num_workers

    lock.downgrade_to_shared()  # workers share it; a second submitter is still refused
    procs = [start_worker(spec_path, output_dir, k, num_workers, g, container, names[i] if names else None)
             for i, (k, g) in enumerate(zip(indices, gpu_ids))]
    bars = ProgressBars(output_dir, labels, totals, done, worker_indices=indices)
    interrupted = False
    try:
        while any(p.poll() is None for p in procs):
            bars.refresh()
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
    summary = write_run_summary(output_dir, [s.file_name for s in samples], workers, started, command, interrupted,
                                schedule=spec.schedule, already_there=sum(s.file_name in on_disk for s in samples))
    for w in workers:
        if w["exit_code"] not in (0, None) and not interrupted:
            print(f"---- last lines of {w['label']}'s log:", file=sys.stderr)
            print("".join(_tail(layout.worker_log(output_dir, w["worker_index"]))).rstrip(), file=sys.stderr)
    for line in final_lines(summary):
        print(line, file=sys.stderr)
    if interrupted:
        # The run is over: a Ctrl+C arriving now, while Python exits (it restores the default handler,
        # which kills the process), must not turn exit status 130 into death by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return 130
    return exit_status(summary, all(w["exit_code"] == 0 for w in workers))
