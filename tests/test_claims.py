"""The block queue of --schedule dynamic (schedule/claims.py, schedule/dynamic.py): claims, leases, take-over, done markers; and the
progress watch (worker/watch.py) that renews a worker's lease only while its generation makes progress."""
import dataclasses
import json
import logging
import multiprocessing
import os
import threading
import time

import pytest

from conftest import wait_for
from gen_worker.output.prepare import forget_block_queue
from gen_worker.schedule import dynamic
from gen_worker.schedule.claims import BlockQueue, Observer, create_name, done_blocks, leases, reserve_worker_indices
from gen_worker.output.layout import SETTINGS_FILE
from gen_worker.spec import JobSpec
from gen_worker.worker.watch import ProgressWatch


@pytest.fixture
def queues(tmp_path):
    made = []

    def make(num_blocks, lease=60.0, worker=None):
        q = BlockQueue(str(tmp_path), num_blocks, lease, worker=worker, poll_seconds=0.05)
        q.watch = ProgressWatch(lease, on_progress=q.beat)  # as in a worker: it beats while the worker progresses
        made.append(q)
        return q
    yield make
    for q in made:
        q.watch.stop()


def test_a_block_is_claimed_once(queues):
    a, b = queues(3, worker="a"), queues(3, worker="b")
    assert a.claim(0) and not b.claim(0) and b.claim(1)
    assert open(a.claim_path(0)).read().strip() == "a"
    assert a.claimed == 1 and b.claimed == 1


def test_workers_claim_in_index_order_and_share_the_blocks(queues):
    a, b = queues(5, worker="a"), queues(5, worker="b")
    got_a, got_b = a.blocks(), b.blocks()
    order = [("a", next(got_a)), ("b", next(got_b)), ("b", next(got_b)), ("a", next(got_a))]
    assert order == [("a", 0), ("b", 1), ("b", 2), ("a", 3)]


def test_a_done_block_is_never_claimed_and_a_worker_finding_all_done_ends_at_once(queues, tmp_path):
    a = queues(2, worker="a")
    assert list(a.blocks()) == [0, 1]
    a.done(0)
    a.done(1)
    assert done_blocks(str(tmp_path)) == {0, 1}
    late = queues(2, worker="late")
    started = time.monotonic()
    assert list(late.blocks()) == [] and time.monotonic() - started < 1
    assert not late.claim(0)


def test_blocks_on_disk_are_skipped(queues):
    assert list(queues(4, worker="a").blocks(skip={0, 2})) == [1, 3]


def test_a_live_holder_is_waited_for_and_its_done_block_is_not_made_again(queues):
    holder, other = queues(2, worker="holder"), queues(2, worker="other")
    assert holder.claim(0) and holder.claim(1)
    threading.Timer(0.3, lambda: (holder.done(0), holder.done(1))).start()
    started = time.monotonic()
    assert list(other.blocks()) == []
    assert time.monotonic() - started >= 0.25


def test_a_frozen_heartbeat_expires_and_its_block_is_taken_over(queues):
    dead = queues(2, lease=0.4, worker="dead")
    assert dead.claim(0)
    dead.watch.stop()  # killed: the counter stops moving
    live = queues(2, lease=0.4, worker="live")
    started = time.monotonic()
    assert list(live.blocks()) == [1, 0]
    assert time.monotonic() - started >= 0.4  # a full lease of the observer's own clock
    assert live.taken_over == 1 and open(live.claim_path(0)).read().strip() == "live"


def test_a_beating_holder_does_not_expire(tmp_path, queues):
    holder = queues(1, lease=0.4, worker="holder")
    holder.claim(0)
    observer = Observer(str(tmp_path), 0.4)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert not observer.dead("holder")
        time.sleep(0.05)


def test_release_on_close_lets_another_worker_take_the_block_without_waiting(queues):
    a = queues(1, lease=60, worker="a")
    assert a.claim(0)
    a.close()
    assert list(queues(1, lease=60, worker="b").blocks()) == [0]


def _take_over(args):
    folder, name, barrier = args
    q = BlockQueue(folder, 1, 60.0, worker=name)
    barrier.wait()
    won = q.take_over(0, "dead")
    q.close() if not won else q._heartbeat.stop()
    return won


def test_take_over_race_between_processes_has_exactly_one_winner(tmp_path):
    for attempt in range(5):
        folder = str(tmp_path / str(attempt))
        os.makedirs(os.path.join(folder, "claims"))
        create_name(os.path.join(folder, "claims", "block000000"), "dead\n")
        with multiprocessing.Manager() as manager:
            barrier = manager.Barrier(4)
            with multiprocessing.Pool(4) as pool:
                won = pool.map(_take_over, [(folder, f"w{i}", barrier) for i in range(4)])
        assert sum(won) == 1, won
        holder = open(os.path.join(folder, "claims", "block000000")).read().strip()
        assert holder == f"w{won.index(True)}"


def test_take_over_race_between_threads_has_exactly_one_winner(queues):
    dead = queues(1, worker="dead")
    dead.claim(0)
    takers = [queues(1, worker=f"t{i}") for i in range(8)]
    barrier, won = threading.Barrier(len(takers)), []

    def take(q):
        barrier.wait()
        if q.take_over(0, "dead"):
            won.append(q.worker)
    threads = [threading.Thread(target=take, args=(q,)) for q in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and open(dead.claim_path(0)).read().strip() == won[0]


def test_create_name_never_replaces(tmp_path):
    path = str(tmp_path / "x")
    assert create_name(path, "first")
    assert not create_name(path, "second")
    assert open(path).read() == "first" and os.listdir(tmp_path) == ["x"]


def test_joiners_get_new_worker_indices(tmp_path):
    assert reserve_worker_indices(str(tmp_path), 2) == [0, 1]
    assert reserve_worker_indices(str(tmp_path), 2) == [2, 3]
    forget_block_queue(str(tmp_path))  # a new run
    assert reserve_worker_indices(str(tmp_path), 1) == [0]


def test_the_lease_is_the_runs_and_a_joiner_with_another_lease_uses_it(tmp_path):
    first = JobSpec(prompts_csv="p.csv", output_dir=str(tmp_path), model_path="m", lease_seconds=30)
    assert dynamic.DYNAMIC.start(first, 2) == [0, 1]
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"settings": first.recorded_settings()}))
    joiner = dataclasses.replace(first, lease_seconds=500)
    assert dynamic.DYNAMIC.join(joiner, 1) == [2]  # the lease is not one of the things a joiner must match
    assert dynamic.run_lease(str(tmp_path), joiner.lease_seconds) == 30  # what the joiner's workers use
    assert dynamic.run_lease(str(tmp_path / "static"), 500) == 500  # no dynamic run there: the worker's own


def test_leases_show_holders_and_their_heartbeat(queues, tmp_path):
    a = queues(3, worker="a")
    a.claim(0), a.claim(1)
    a.done(1)
    [lease] = leases(str(tmp_path))
    assert lease["block"] == 0 and lease["holder"] == "a" and 0 <= lease["heartbeat_age"] < 5


def test_a_pipeline_call_without_progress_loses_its_block_and_one_with_progress_keeps_it(queues):
    stuck, live = queues(2, lease=1.0, worker="stuck"), queues(2, lease=1.0, worker="live")
    assert stuck.claim(0) and live.claim(1)
    pulsing = threading.Event()

    def steps():
        while not pulsing.is_set():
            live.watch.pulse()
            time.sleep(0.02)
    pulser = threading.Thread(target=steps)
    with stuck.watch.calling(), live.watch.calling():  # stuck: a hung GPU call; its process and threads run on
        pulser.start()
        try:
            other = queues(2, lease=1.0, worker="other")
            taken = other.blocks()
            assert next(taken) == 0 and other.taken_over == 1  # a lease after stuck's last step
            assert open(other.claim_path(0)).read().strip() == "other"
            threading.Timer(2.5, live.done, args=(1,)).start()  # live's block is waited for, never taken
            assert list(taken) == [] and other.taken_over == 1
        finally:
            pulsing.set()
            pulser.join()


def test_a_warm_up_calls_grace_keeps_the_lease_without_progress(queues):
    warming = queues(1, lease=1.0, worker="warming")
    assert warming.claim(0)
    observer = Observer(os.path.dirname(warming.folder), 1.0)
    with warming.watch.calling(grace=3.0):  # torch.compile's first call: no step for minutes
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert not observer.dead("warming")
            time.sleep(0.05)
        wait_for(lambda: observer.dead("warming"), 10, what="the lease to run out after the grace")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage\n", b"../../logs\n", b"..\n", "folder"])
def test_an_empty_or_garbage_claim_counts_as_expired(queues, content):
    q = queues(2, lease=60, worker="a")  # a long lease: taken over at once, not after it
    path = q.claim_path(0)
    if content == "folder":
        os.mkdir(path)
    else:
        open(path, "wb").write(content)
    [lease] = leases(os.path.dirname(q.folder))  # what status shows
    assert lease["holder"] == "" and lease["heartbeat_age"] is None
    assert list(q.blocks()) == [1, 0] and q.taken_over == 1
    assert open(path).read().strip() == "a"


def test_a_failed_heartbeat_write_is_a_warning_and_the_worker_finishes(queues, caplog):
    q = queues(1, lease=0.4, worker="a")
    os.remove(q._heartbeat.path)
    os.mkdir(q._heartbeat.path)  # the heartbeat file can be neither written nor removed
    with caplog.at_level(logging.WARNING):
        for block in q.blocks():
            time.sleep(0.3)  # beats fail meanwhile
            q.done(block)
        q.close()
    assert "heartbeat" in caplog.text and "not written" in caplog.text and "not removed" in caplog.text
    assert done_blocks(os.path.dirname(q.folder)) == {0}


def _block_files(tmp_path):
    return sorted(n for n in os.listdir(tmp_path / "claims") if n.startswith("block"))


def test_the_last_worker_to_end_compacts_the_queue_into_one_file(queues, tmp_path):
    a, b = queues(4, worker="a"), queues(4, worker="b")
    got_a, got_b = a.blocks(skip={3}), b.blocks()
    assert next(got_a) == 0 and next(got_b) == 1 and next(got_a) == 2
    a.done(0), a.done(2), b.done(1)
    assert list(got_a) == []
    a.close()  # a ends with block 3 skipped: b's marker is there, so every block is done
    assert _block_files(tmp_path) == [] and done_blocks(str(tmp_path)) == {0, 1, 2, 3}
    assert list(b.blocks()) == [] and not b.claim(1)  # a worker still looking sees every block done
    b.close()
    assert leases(str(tmp_path)) == [] and _block_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path / "claims")) == ["all_done.json", "workers"]


def test_a_worker_ending_before_the_others_leaves_the_queue_as_it_is(queues, tmp_path):
    a, b = queues(2, worker="a"), queues(2, worker="b")
    assert a.claim(0) and b.claim(1)
    a.done(0)
    a.close()
    assert "all_done.json" not in os.listdir(tmp_path / "claims")
    assert [lease["block"] for lease in leases(str(tmp_path))] == [1]


def test_a_crash_in_the_middle_of_the_compaction_reads_as_all_done(queues, tmp_path):
    a = queues(3, worker="a")
    for block in a.blocks():
        a.done(block)
    (tmp_path / "claims" / "block000009").write_text("a\n")  # a claim the crash left (any block file)
    (tmp_path / "claims" / "all_done.json").write_text('{"blocks": 3}')
    os.remove(a.claim_path(1) + ".done")  # the crash came after this one went
    assert done_blocks(str(tmp_path)) == {0, 1, 2} and leases(str(tmp_path)) == []
    late = queues(3, worker="late")
    assert list(late.blocks()) == [] and not late.claim(1)
    late.close()
    assert _block_files(tmp_path) == []


def test_a_claim_made_while_the_queue_is_compacted_is_given_back(queues, tmp_path, monkeypatch):
    a, joiner = queues(1, worker="a"), queues(1, worker="joiner")
    assert a.claim(0)
    a.done(0)
    looks = []  # the joiner looked just before the compaction (its first look says not done) ...
    real = joiner.is_done
    monkeypatch.setattr(joiner, "is_done", lambda block: bool(looks.append(block) or len(looks) > 1) and real(block))
    a.close()  # ... which runs now and removes the block's files: the joiner's claim goes through
    assert not joiner.claim(0) and len(looks) == 2 and _block_files(tmp_path) == []
