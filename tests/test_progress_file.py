"""A worker's progress file (output/progress.py): counts written at most once per interval, never lost."""
import json
import time

from conftest import wait_for
from gen_worker.output import layout, progress as progress_module
from gen_worker.output.progress import WorkerProgress


def _on_disk(folder):
    return json.load(open(layout.progress_file(folder, 0)))


def test_counts_are_written_at_most_once_per_interval_and_the_last_ones_always(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "SAVE_INTERVAL_SECONDS", 0.3)
    (tmp_path / layout.LOGS_DIR).mkdir()
    progress = WorkerProgress(str(tmp_path), 0, 1)
    progress.update(state="generating")  # a change of state: written at once
    writes = []
    real = progress_module.replace_json
    monkeypatch.setattr(progress_module, "replace_json", lambda path, data: (writes.append(1), real(path, data)))
    for _ in range(50):  # 50 images within the interval: one write, when it ends
        progress.add("generated")
        progress.save()
    assert _on_disk(tmp_path)["generated"] == 0 and writes == []
    wait_for(lambda: _on_disk(tmp_path)["generated"] == 50, what="the pending write", timeout=5)
    time.sleep(0.4)
    assert len(writes) == 1
    progress.update(state="done")
    assert _on_disk(tmp_path)["state"] == "done" and len(writes) == 2
