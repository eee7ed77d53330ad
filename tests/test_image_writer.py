"""The background image writer: every outcome reported, bounded memory, errors surfaced, clean stop."""
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from gen_worker.atomic_files import create_once
from gen_worker.worker.png import save_png_once
from gen_worker.worker.image_writer import ImageWriter, WriterError
from gen_worker.worker.png import to_uint8


def _collector():
    done = []
    lock = threading.Lock()

    def on_done(item, result, error):
        with lock:
            done.append((item, result, error))
    return done, on_done


def test_writes_everything_and_reports_each_outcome(tmp_path):
    done, on_done = _collector()
    rng = np.random.default_rng(0)
    images = {f"{i}.png": rng.random((8, 8, 3), dtype=np.float32) for i in range(10)}
    writer = ImageWriter(lambda name: save_png_once(to_uint8(images[name]), str(tmp_path / name)), on_done,
                         max_pending=3)
    for name in images:
        writer.put(name)
    writer.close()
    assert sorted(item for item, _, _ in done) == sorted(images)
    assert all(result is True and error is None for _, result, error in done)
    assert sorted(os.listdir(tmp_path)) == sorted(images)
    for name, array in images.items():
        with Image.open(tmp_path / name) as saved:
            assert np.array_equal(np.asarray(saved), to_uint8(array))


def test_a_failed_write_is_reported_and_the_others_go_on():
    done, on_done = _collector()

    def write(item):
        if item == 2:
            raise OSError(28, "No space left on device")
        return True
    writer = ImageWriter(write, on_done, max_pending=2)
    for item in range(5):
        writer.put(item)
    writer.close()
    errors = {item: error for item, _, error in done}
    assert sorted(errors) == [0, 1, 2, 3, 4]
    assert isinstance(errors[2], OSError) and all(errors[i] is None for i in (0, 1, 3, 4))


def test_the_queue_is_bounded_and_waiting_for_it_is_counted():
    release = threading.Event()
    done, on_done = _collector()
    writer = ImageWriter(lambda item: release.wait(10), on_done, max_pending=2, threads=1)
    for item in range(3):  # one being written, two queued
        writer.put(item)
    blocked = threading.Thread(target=writer.put, args=(3,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # the fourth image waits: memory stays bounded
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    writer.close()
    assert sorted(item for item, _, _ in done) == [0, 1, 2, 3]
    assert writer.wait_seconds >= 0.25


def test_a_failing_outcome_handler_stops_the_caller():
    def on_done(item, result, error):
        raise OSError("cannot write the progress file")
    writer = ImageWriter(lambda item: True, on_done, max_pending=2)
    writer.put(1)
    with pytest.raises(WriterError, match="cannot write the progress file"):
        writer.close()


def test_close_with_a_timeout_drops_what_is_queued_and_returns_in_time():
    release = threading.Event()
    done, on_done = _collector()
    writer = ImageWriter(lambda item: release.wait(10), on_done, max_pending=4, threads=1)
    for item in range(4):
        writer.put(item)
    started = time.monotonic()
    writer.close(timeout=0.5)
    assert time.monotonic() - started < 2
    release.set()
    for thread in writer._threads:  # they end after the write under way: nothing more can be written
        thread.join(10)
    assert not any(thread.is_alive() for thread in writer._threads)
    assert [item for item, _, _ in done] == [0]  # the write under way finished; the queued ones were dropped


def test_a_write_stopped_midway_leaves_no_image(tmp_path):
    def interrupted(f):
        f.write(b"\x89PNG partial")
        raise OSError("device went away")
    done, on_done = _collector()
    writer = ImageWriter(lambda item: create_once(str(tmp_path / "a.png"), interrupted), on_done, max_pending=1)
    writer.put("a")
    writer.close()
    assert isinstance(done[0][2], OSError)
    assert os.listdir(tmp_path) == []
