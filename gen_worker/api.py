"""generate(): t2i-batch from Python, with the command line's settings as keyword arguments.

    from gen_worker import generate
    result = generate(prompts_csv="prompts.csv", output_dir="out", model_path="org/model", num_inference_steps=20)
    result.ok, result.counts["generated"], result.failures, result.summary

The keywords are submit.py's flags by name (named_settings.py turns them into its argv), so the checks, the plan
and the run are the command line's own (cli.parse, plan.run); a bad value raises a T2IError (one line), never
SystemExit. The result is read from what the run wrote in its folder (summary.json, failed_prompts_gpu*.txt),
not from printed lines. generate(..., cluster="slurm", wait=False) returns a SlurmRun once the tasks are
queued: status(), wait(), cancel(), over slurm/status.py.
"""
import argparse
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from gen_worker import cli, plan
from gen_worker.atomic_files import read_json_if_any
from gen_worker.campaign import campaign_runs, together_or_why
from gen_worker.errors import T2IError
from gen_worker.named_settings import settings_argv
from gen_worker.output import layout
from gen_worker.output.summary import command_line
from gen_worker.slurm.commands import queue_states
from gen_worker.slurm.status import cancel_run, follow, run_folders, task_views
from gen_worker.slurm.record import latest_submission
from gen_worker.output.sweep_record import read_sweep_record

COUNTS = ("num_samples", "generated", "skipped", "failed", "missing")


class RunFailed(T2IError):
    """The submission itself failed (sbatch refused the jobs): nothing to follow."""


@dataclasses.dataclass
class RunResult:
    """One output folder, as its run left it."""
    folder: str
    summary: Dict[str, Any]  # its summary.json ({} if none was written)
    failures: List[Dict[str, Any]]  # one per image that failed: index, image_id, seed, prompt, error

    @classmethod
    def read(cls, folder: str) -> "RunResult":
        summary = read_json_if_any(os.path.join(folder, layout.RUN_SUMMARY_FILE)) or {}
        failures = []
        for name in summary.get("failed_files", []):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                failures += [json.loads(line) for line in f if line.strip()]
        return cls(folder, summary, failures)


@dataclasses.dataclass
class Result:
    """A run (or a sweep: one RunResult per configuration) once it has ended."""
    folder: str
    exit_status: int  # submit.py's: 0 when every image is there and valid
    runs: List[RunResult]

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def counts(self) -> Dict[str, int]:
        """num_samples, generated, skipped, failed, missing: added over the runs."""
        return {key: sum(run.summary.get(key) or 0 for run in self.runs) for key in COUNTS}

    @property
    def failures(self) -> List[Dict[str, Any]]:
        return [failure for run in self.runs for failure in run.failures]

    @property
    def summary(self) -> Dict[str, Any]:
        """The run's summary.json; a sweep's: {configuration folder name: its summary.json}."""
        if len(self.runs) == 1 and self.runs[0].folder == self.folder:
            return self.runs[0].summary
        return {os.path.basename(run.folder): run.summary for run in self.runs}

    @classmethod
    def read(cls, folder: str, exit_status: int) -> "Result":
        record = read_sweep_record(folder)
        folders = [os.path.join(folder, c.folder) for c in record.configurations] if record else [folder]
        return cls(folder, exit_status, [RunResult.read(f) for f in folders])


@dataclasses.dataclass
class SlurmRun:
    """A SLURM run queued by generate(..., wait=False)."""
    folder: str

    def _folders(self) -> List[str]:
        return run_folders(self.folder) or [self.folder]

    def status(self) -> Dict[str, Any]:
        """{"finished": bool, "tasks": {folder: [{"worker", "slurm_id", "queue", "done", "total", "finished", "ok",
        "message"}]}}, from squeue and the files the tasks write (as `submit.py status`)."""
        tasks: Dict[str, List[Dict[str, Any]]] = {}
        for folder in self._folders():
            submission = latest_submission(folder)
            if submission is None:
                raise RunFailed(f"no SLURM submission is recorded in {folder}")
            states = queue_states([t["slurm_id"] for t in submission["tasks"]])
            tasks[folder] = [{key: view[key] for key in ("worker", "slurm_id", "queue", "done", "total", "finished",
                                                         "ok", "message")}
                             for view in task_views(folder, submission, states)]
        finished = all(task["finished"] for views in tasks.values() for task in views)
        return {"finished": finished, "tasks": tasks}

    def wait(self) -> Result:
        """Follow the run (progress bars on stderr) until every task has ended; its Result."""
        return Result.read(self.folder, follow(self.folder))

    def cancel(self) -> int:
        """Cancel every job of the run (as `submit.py cancel`); 0 once done."""
        return cancel_run(self.folder)


Outcome = Union[Result, SlurmRun]


def generate(config: Optional[str] = None, **settings: Any) -> Union[Outcome, List[Outcome]]:
    """Run t2i-batch with submit.py's flags as keywords (compile=True for --compile, sweep={"guidance_scale":
    [1.5, 3.0]}, gpu_ids=["0", "1"]); the Result once it has ended. With cluster="slurm": wait=False returns
    a SlurmRun once the tasks are queued (default: wait, as --wait). config: a campaign file (docs/usage.md),
    these keywords overriding it; one Result (or SlurmRun) per [[run]], in order. Raises a T2IError."""
    parser = cli.build_parser(parser_class=cli.RaisingParser)
    argv = settings_argv(parser, settings)
    if config is None:
        return _run(argv)
    runs = campaign_runs(config, argv, cli.build_parser)
    parsed = [_parse(run.argv) for run in runs]  # every run checked before the first starts, as on the command line
    command = command_line(["python", "submit.py", "--config", config, *argv])
    if together_or_why(config, runs, [args for _, args in parsed]):
        items = [(parser, run.argv, args) for run, (parser, args) in zip(runs, parsed)]
        status = plan.run_together(items, command, runs[0].record)
        return [_outcome(args, status) for _, args in parsed]
    return [_outcome(args, plan.run(parser, run.argv, args, command, run.record))
            for run, (parser, args) in zip(runs, parsed)]


def _run(argv: List[str]) -> Outcome:
    parser, args = _parse(argv)
    command = command_line(["python", "submit.py", *argv])  # what the summary's rerun hint shows
    return _outcome(args, plan.run(parser, argv, args, command))


def _parse(argv: List[str]) -> Tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser, args = cli.parse(argv, cli.RaisingParser)
    if args.cluster == "slurm" and args.wait is None:
        args.wait = True  # not the terminal's guess: a notebook has none
    return parser, args


def _outcome(args: argparse.Namespace, status: int) -> Outcome:
    folder = os.path.abspath(args.output_dir)
    if args.cluster == "slurm" and not args.wait:
        if status != 0:
            raise RunFailed(f"the SLURM submission into {folder} failed (exit status {status}; see the lines above)")
        return SlurmRun(folder)
    return Result.read(folder, status)
