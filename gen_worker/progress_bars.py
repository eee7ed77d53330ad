"""One progress bar per worker, fed by the progress files the workers write.

Reading files (rather than worker output) means the same bars work for local subprocesses and
for SLURM tasks on other nodes that share the output folder.
"""
import sys

from tqdm import tqdm

from gen_worker.progress import read_progress

# tqdm puts ", " before a postfix itself: "GPU 2: 100%|...| 250/250 [30:00<00:00, success: 248, failed: 2]"
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class ProgressBars:
    def __init__(self, output_dir, labels, totals, already_done, file=None):
        """labels[k], totals[k], already_done[k]: worker k's name ("GPU 2"), sample count, images on disk."""
        self.output_dir = output_dir
        file = file or sys.stderr
        self.interactive = file.isatty()
        interactive = self.interactive
        self.bars = [
            tqdm(total=total, initial=done, desc=label, position=k, file=file, bar_format=BAR_FORMAT,
                 dynamic_ncols=interactive, mininterval=0.2 if interactive else 30, leave=True)
            for k, (label, total, done) in enumerate(zip(labels, totals, already_done))
        ]
        for bar, done in zip(self.bars, already_done):
            bar.set_postfix_str(f"success: {done}, failed: 0, starting", refresh=False)

    def refresh(self):
        for k, bar in enumerate(self.bars):
            progress = read_progress(self.output_dir, k)
            if progress is None:
                continue
            success = progress["skipped"] + progress["generated"]
            state = "" if progress["state"] in ("generating", "done") else f", {progress['state']}"
            bar.set_postfix_str(f"success: {success}, failed: {progress['failed']}{state}", refresh=False)
            bar.update(max(0, success + progress["failed"] - bar.n))
            if self.interactive:  # in a log file, update() alone prints at most every mininterval
                bar.refresh()

    def close(self):
        for bar in self.bars:
            bar.close()
