"""One progress bar per worker, fed by the progress files the workers write.

Reading files (rather than worker output) means the same bars work for local subprocesses and
for SLURM tasks on other nodes that share the output folder. A sweep's worker writes one progress
file per configuration folder: its bar adds them up.
"""
import sys
from typing import Any, Iterable, Sequence

from tqdm import tqdm

from gen_worker.output.progress import read_progress

# tqdm puts ", " before a postfix itself: "GPU 2: 100%|...| 250/250 [30:00<00:00, success: 248, failed: 2]"
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class ProgressBars:
    def __init__(self, output_dirs: str | Sequence[str], labels: Sequence[str], totals: Sequence[int],
                 already_done: Sequence[int], worker_indices: Iterable[int] | None = None) -> None:
        """labels[k], totals[k], already_done[k]: worker k's name ("GPU 2"), sample count, images on disk
        (over every folder of output_dirs: a run's folder, or a sweep's configuration folders).

        worker_indices: the worker each bar shows, when not simply 0, 1, 2, ... (a SLURM rerun
        queues only the workers with something left).
        """
        self.output_dirs = [output_dirs] if isinstance(output_dirs, str) else list(output_dirs)
        self.worker_indices = list(range(len(labels))) if worker_indices is None else list(worker_indices)
        self.interactive = sys.stderr.isatty()
        self.bars = [
            tqdm(total=total, initial=done, desc=label, position=k, file=sys.stderr, bar_format=BAR_FORMAT,
                 dynamic_ncols=self.interactive, mininterval=0.2 if self.interactive else 30, leave=True)
            for k, (label, total, done) in enumerate(zip(labels, totals, already_done))
        ]
        for bar, done in zip(self.bars, already_done):
            bar.set_postfix_str(f"success: {done}, failed: 0, starting", refresh=False)

    def set_label(self, position: int, label: str) -> None:
        self.bars[position].set_description_str(label, refresh=False)

    def refresh(self, notes: dict[int, str] | None = None) -> None:
        """notes: {bar position: text shown instead of the worker's state} (e.g. a SLURM queue state)."""
        notes = notes or {}
        for position, (k, bar) in enumerate(zip(self.worker_indices, self.bars)):
            progress = self._progress(k)
            note = notes.get(position)
            if progress is None:
                if note:
                    bar.set_postfix_str(f"success: {bar.n}, failed: 0, {note}", refresh=self.interactive)
                continue
            success = progress["skipped"] + progress["generated"]
            if progress.get("total") and progress["total"] != bar.total:  # a dynamic worker's share, once known
                bar.total = progress["total"]
            state = "" if progress["state"] in ("generating", "done") else f", {progress['state']}"
            state = f", {note}" if note else state
            bar.set_postfix_str(f"success: {success}, failed: {progress['failed']}{state}", refresh=False)
            bar.update(max(0, success + progress["failed"] - bar.n))
            if self.interactive:  # in a log file, update() alone prints at most every mininterval
                bar.refresh()

    def _progress(self, k: int) -> dict[str, Any] | None:
        """Worker k's counts over every folder; its state is that of the first folder not done."""
        found = [p for p in (read_progress(d, k) for d in self.output_dirs) if p is not None]
        if not found:
            return None
        complete = len(found) == len(self.output_dirs)  # else some folder is still to come
        states = [p["state"] for p in found if p["state"] != "done"]
        totals = [p.get("total") for p in found]
        return {"state": states[0] if states else "done" if complete else "generating",
                "total": sum(totals) if complete and None not in totals else None,
                **{key: sum(p[key] for p in found) for key in ("skipped", "generated", "failed")}}

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
