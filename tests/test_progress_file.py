"""A worker's progress file (output/progress.py): counts written at most once per interval, never lost,
made once and then overwritten in place, and never read half written."""
import os
import time

from conftest import wait_for
from gen_worker.output import layout, progress as progress_module
from gen_worker.output.progress import WorkerProgress, decode, encode, read_progress


def _on_disk(folder):
    return read_progress(folder, 0)


def test_counts_are_written_at_most_once_per_interval_and_the_last_ones_always(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "SAVE_INTERVAL_SECONDS", 0.3)
    (tmp_path / layout.LOGS_DIR).mkdir()
    progress = WorkerProgress(str(tmp_path), 0, 1)
    progress.update(state="generating")  # a change of state: written at once
    writes = []
    real = WorkerProgress._store
    monkeypatch.setattr(WorkerProgress, "_store", lambda self, content: (writes.append(1), real(self, content)))
    for _ in range(50):  # 50 images within the interval: one write, when it ends
        progress.add("generated")
        progress.save()
    assert _on_disk(tmp_path)["generated"] == 0 and writes == []
    wait_for(lambda: _on_disk(tmp_path)["generated"] == 50, what="the pending write", timeout=5)
    time.sleep(0.4)
    assert len(writes) == 1
    progress.update(state="done")
    assert _on_disk(tmp_path)["state"] == "done" and len(writes) == 2


def test_the_file_is_made_once_then_overwritten_in_place(tmp_path, monkeypatch):
    """After the first write no create, link, rename or unlink: the same inode, whatever the lengths."""
    (tmp_path / layout.LOGS_DIR).mkdir()
    progress = WorkerProgress(str(tmp_path), 0, 1)
    progress.update(state="generating", message="a long message " * 20)
    path = layout.progress_file(str(tmp_path), 0)
    inode = os.stat(path).st_ino
    renames = []
    monkeypatch.setattr(progress_module.os, "replace", lambda *a: renames.append(a))
    progress.update(message="")  # shorter: padded, not truncated
    progress.add("generated", 7)
    progress.update(state="done")
    assert os.stat(path).st_ino == inode and renames == []
    assert sorted(os.listdir(tmp_path / layout.LOGS_DIR)) == [os.path.basename(path)]
    assert _on_disk(tmp_path)["generated"] == 7 and _on_disk(tmp_path)["message"] == ""
    progress.close()
    assert _on_disk(tmp_path)["state"] == "done"


def test_a_write_caught_half_done_is_not_taken_for_counts(tmp_path, monkeypatch):
    """A reader that sees the start of a new write over the end of an old one (same length, so valid JSON
    with mixed digits) gets a checksum mismatch: it reads again, and gives None rather than wrong counts."""
    old = encode({"generated": 19, "failed": 0, "state": "generating"})
    new = encode({"generated": 20, "failed": 0, "state": "generating"})
    assert len(old) == len(new)
    torn = new[:len(new) // 2] + old[len(old) // 2:]
    assert decode(old)["generated"] == 19 and decode(new)["generated"] == 20
    mixed = old.replace(b'"generated": 19', b'"generated": 10')  # JSON that parses, with a count neither wrote
    assert decode(mixed) is None and decode(torn) in (None, decode(new), decode(old))
    assert decode(new[:-9]) is None  # cut short: no JSON
    (tmp_path / layout.LOGS_DIR).mkdir()
    with open(layout.progress_file(str(tmp_path), 0), "wb") as f:
        f.write(mixed)
    monkeypatch.setattr(progress_module, "READ_PAUSE_SECONDS", 0)
    assert read_progress(str(tmp_path), 0) is None
    assert read_progress(str(tmp_path), 1) is None  # never written


def test_a_file_an_earlier_version_wrote_whole_is_read():
    assert decode(b'{"generated": 3, "state": "done"}\n') == {"generated": 3, "state": "done"}
