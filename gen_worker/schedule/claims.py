"""The block queue of --schedule dynamic, kept in output_dir/claims/ (no server: the shared file system).

Block b is samples [b*batch_size, (b+1)*batch_size): the blocks of the static schedule, so a
sample's image is the same whichever worker makes it.

    claims/block{b:06d}           the claim: holds the claiming worker's id
    claims/block{b:06d}.done      every image of the block is written or recorded as failed (the claim,
                                  renamed)
    claims/workers/<worker id>    the worker's heartbeat: a counter it rewrites every lease/4 s while
                                  its generation makes progress (worker/watch.py)
    claims/index{k}               worker index k is taken (it names summary_gpu{k}, progress_gpu{k}, ...)
    claims/run.json               the run's samples and batch size (a joining submitter must match them)
                                  and its lease, which every worker of the run uses, joiners' included
    claims/all_done.json          every block is done (the compaction, compact()): the per-block files
                                  above are gone or going, and every reader counts all blocks done

No per-block litter: the worker that ends and finds every block done writes all_done.json (atomically,
first) and then removes the block files. A crash in between leaves all_done.json and some block files,
which every reader reads as all done; a worker still looking (a joiner's) asks for a block's .done file
first and all_done.json next, so it never misses both, and a claim made in that race is given back.

Claiming creates a name only if it does not exist, with os.link() of a private temporary file:
link is atomic on the server on NFS v2/v3/v4, Lustre and GPFS (the classic NFS-safe lock; O_EXCL
was not on NFS v2). When a link answer is lost (an NFS retry of a link that did succeed returns
EEXIST or another error), the temporary file's link count of 2 says it did succeed.

A lease never compares clocks of different hosts: an observer notes a holder's heartbeat counter
and its OWN time.monotonic(); when the counter has not moved for lease_seconds of the observer's
clock, the holder is dead or stuck and its unfinished claims are taken over: os.rename() of the claim to a
name of the taker's own (rename is atomic: one renamer wins), then a new claim. The worst outcome
of a lost race is two workers making the same block: images are created with a hard link that
never replaces a file (atomic_files.create_once), so the second copy is skipped. A claim file that
names no worker (empty, garbage, a folder) is expired: it is taken over at once.
"""
import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import Collection, Iterator

from gen_worker.output import layout
from gen_worker.atomic_files import read_json_if_any, replace_file, replace_json

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a worker with nothing to claim looks at the others' blocks
RUN_FILE = "run.json"  # what the run's workers make: a joining submitter must make the same
ALL_DONE_FILE = "all_done.json"  # every block is done: the per-block files were compacted into this one
_WORKER_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")  # what worker_id() makes; "." and ".." excepted


def worker_id() -> str:
    """Unique across hosts, restarts and joins; safe as a file name."""
    slurm = "-".join(os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_PROCID") if k in os.environ)
    parts = [socket.gethostname().split(".")[0], str(os.getpid()), slurm, uuid.uuid4().hex[:6]]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(p for p in parts if p))


def claims_dir(output_dir: str) -> str:
    return os.path.join(output_dir, layout.CLAIMS_DIR)


def create_name(path: str, content: str) -> bool:
    """Create `path` holding `content` unless it exists; atomic on NFS, Lustre, GPFS. True if created."""
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(content)
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return os.stat(temp).st_nlink == 2  # a retried link that had succeeded
    except OSError:
        if os.stat(temp).st_nlink == 2:
            return True
        raise
    finally:
        os.remove(temp)


def _all_done_count(folder: str) -> int | None:
    """The number of blocks all_done.json says are all done (None: no compaction yet)."""
    found = read_json_if_any(os.path.join(folder, ALL_DONE_FILE))
    count = found.get("blocks") if isinstance(found, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None


def done_blocks(output_dir: str) -> set[int]:
    """The blocks marked done (one listing, not a stat per block), every block once compacted."""
    folder = claims_dir(output_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    done = {int(n[5:-5]) for n in names if n.startswith("block") and n.endswith(".done") and n[5:-5].isdigit()}
    count = _all_done_count(folder) if ALL_DONE_FILE in names else None
    return done | set(range(count)) if count is not None else done


def _remove_if_there(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def compact(output_dir: str, num_blocks: int, skipped: Collection[int] = ()) -> bool:
    """Once every block is done (marked, or in `skipped`: complete on disk when the run started), replace the
    per-block files by all_done.json. Safe to run by several workers at once and to crash in. True if done."""
    folder = claims_dir(output_dir)
    done = done_blocks(output_dir)
    if any(b not in done and b not in skipped for b in range(num_blocks)):
        return False
    replace_json(os.path.join(folder, ALL_DONE_FILE), {"blocks": num_blocks})  # first: then the files may go
    for name in os.listdir(folder):
        # Claims, .done markers, claims set aside by take-overs; not a temporary file another worker's
        # create_name is about to link (it removes its own).
        if name.startswith("block") and not name.endswith(".tmp"):
            _remove_if_there(os.path.join(folder, name))
    return True


def reserve_worker_indices(output_dir: str, count: int) -> list[int]:
    """The `count` lowest worker indices no one has taken in this run (a joining submitter gets new ones)."""
    folder = claims_dir(output_dir)
    os.makedirs(folder, exist_ok=True)
    taken: list[int] = []
    k = 0
    while len(taken) < count:
        if create_name(os.path.join(folder, f"index{k}"), f"{socket.gethostname()} {os.getpid()}\n"):
            taken.append(k)
        k += 1
    return taken


def _read(path: str) -> str | None:
    """A small file's text (undecodable bytes replaced: only compared), None if there is none; "" for a folder."""
    try:
        with open(path, "rb") as f:
            return f.read(256).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return ""


def _holder(claim: str) -> str | None:
    """The worker a claim names; None when there is no claim (released); "" when the file names no worker
    (empty, garbage, a folder): an expired claim."""
    text = _read(claim)
    return text if text is None or _WORKER_ID.fullmatch(text) and text not in (".", "..") else ""


class Heartbeat:
    """claims/workers/<id>: a counter that beat() rewrites with the next number. The worker's progress watch
    (worker/watch.py) beats every lease/4 s while the worker makes progress. A failed write is a warning:
    the next beat may work (a long failure loses the lease; the worker goes on)."""

    def __init__(self, output_dir: str, worker: str) -> None:
        self.path = os.path.join(claims_dir(output_dir), "workers", worker)
        self.count = 0
        self._lock = threading.Lock()  # beat() from the watch's thread, stop() from the worker's
        self._stopped = False
        self.beat()

    def beat(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.count += 1
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                replace_file(self.path, f"{self.count}\n".encode())
            except OSError as err:
                log.warning("heartbeat %s not written: %s", self.path, err)

    def stop(self) -> None:
        """The worker ends: no more beats, and the file goes (its claims are done or released)."""
        with self._lock:
            self._stopped = True
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning("heartbeat %s not removed: %s", self.path, err)


class Observer:
    """Judges other workers alive or dead from their heartbeat counters, by this process's clock only."""

    def __init__(self, output_dir: str, lease_seconds: float) -> None:
        self.folder = os.path.join(claims_dir(output_dir), "workers")
        self.lease = lease_seconds
        self._seen: dict[str, tuple[str | None, float]] = {}  # worker: (counter, when it last changed)

    def seconds_since_beat(self, worker: str) -> float:
        """Seconds of this clock since `worker`'s counter was seen to change (0 on first sight)."""
        counter, now = _read(os.path.join(self.folder, worker)), time.monotonic()
        last = self._seen.get(worker)
        if last is None or last[0] != counter:
            self._seen[worker] = (counter, now)
            return 0.0
        return now - last[1]

    def dead(self, worker: str) -> bool:
        return self.seconds_since_beat(worker) >= self.lease


class BlockQueue:
    """One worker's view of the queue: claim blocks in index order, take over expired ones, mark done.
    Its lease lives while beat() is called (every lease/4 s: the worker's progress watch does it)."""

    def __init__(self, output_dir: str, num_blocks: int, lease_seconds: float, worker: str | None = None,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.folder = claims_dir(output_dir)
        self.num_blocks = num_blocks
        self.worker = worker or worker_id()
        self.poll_seconds = min(poll_seconds, lease_seconds / 4)
        self.observer = Observer(output_dir, lease_seconds)
        self.claimed = 0
        self.taken_over = 0
        self._mine: set[int] = set()  # claimed by this worker
        self._marked: set[int] = set()  # ... and marked done
        self._finished: set[int] = set()  # done, or claimed by this worker
        self._skipped: set[int] = set()  # complete on disk when this worker started
        self._heartbeat = Heartbeat(output_dir, self.worker)

    def beat(self) -> None:
        self._heartbeat.beat()

    def claim_path(self, block: int) -> str:
        return os.path.join(self.folder, f"block{block:06d}")

    def is_done(self, block: int) -> bool:
        # The block's marker first, then the compaction's (written before any marker goes): never neither.
        return os.path.exists(self.claim_path(block) + ".done") \
            or os.path.exists(os.path.join(self.folder, ALL_DONE_FILE))

    def claim(self, block: int) -> bool:
        """Claim a block no one claimed yet."""
        # A stat first: a lost race costs one look, not create_name's create, link and unlink.
        if self.is_done(block) or os.path.lexists(self.claim_path(block)) \
                or not create_name(self.claim_path(block), self.worker + "\n"):
            return False
        if self.is_done(block):  # done (and compacted) while claiming: give the claim back
            _remove_if_there(self.claim_path(block))
            return False
        self.claimed += 1
        self._mine.add(block)
        return True

    def take_over(self, block: int, holder: str) -> bool:
        """Claim a block whose holder is dead: only one of several takers wins."""
        path = self.claim_path(block)
        aside = f"{path}.expired-{self.worker}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False  # another taker was first
        if _holder(aside) != holder:  # renamed the claim a faster taker had just made: give it back
            try:
                os.link(aside, path)
            except (FileExistsError, FileNotFoundError):  # FileNotFoundError: compacted meanwhile
                pass
            _remove_if_there(aside)
            return False
        if self.is_done(block) or not self.claim(block):
            return False
        self.taken_over += 1
        log.info("block %d: took over from %s (%s)", block, holder or "a claim naming no worker",
                 f"no heartbeat for {self.observer.lease:.0f} s" if holder else "expired")
        return True

    def done(self, block: int) -> None:
        """Every image of the block is written or recorded as failed."""
        path = self.claim_path(block)
        if not os.path.exists(os.path.join(self.folder, ALL_DONE_FILE)):  # a late copy leaves no marker
            try:  # the claim becomes the marker: one rename, not a create, a link and an unlink
                os.rename(path, path + ".done")  # (a taker's claim too: the block is done, the taker's copy idles)
            except FileNotFoundError:  # a taker set it aside just now
                create_name(path + ".done", self.worker + "\n")
        self._marked.add(block)

    def blocks(self, skip: Collection[int] = ()) -> Iterator[int]:
        """The blocks this worker is to make, each claimed just before it is yielded (`skip`: blocks whose
        images are all on disk). Once nothing is left unclaimed, waits for the other workers' blocks,
        taking over those of dead workers; ends when every block is done or claimed by this worker."""
        self._finished.update(skip)
        self._skipped.update(skip)
        self._finished.update(done_blocks(os.path.dirname(self.folder)))
        try:  # one listing, not a failed link per block, for a worker that starts late
            taken = {int(n[5:]) for n in os.listdir(self.folder) if n.startswith("block") and n[5:].isdigit()}
        except FileNotFoundError:
            taken = set()
        for block in range(self.num_blocks):  # the first pass: claim in index order
            if block not in self._finished and block not in taken and self.claim(block):
                self._finished.add(block)
                yield block
        while True:  # nothing unclaimed: wait for the others' blocks, take over the dead ones'
            waiting = False
            for block in range(self.num_blocks):
                if block in self._finished:
                    continue
                if self.is_done(block):
                    self._finished.add(block)
                    continue
                holder = _holder(self.claim_path(block))
                if holder is None:  # released, or between a take-over's rename and link
                    if self.claim(block):
                        self._finished.add(block)
                        yield block
                    else:
                        waiting = True
                elif holder != self.worker and (not holder or self.observer.dead(holder)) \
                        and self.take_over(block, holder):
                    self._finished.add(block)
                    yield block
                else:
                    waiting = True
            if not waiting:
                return
            time.sleep(self.poll_seconds)

    def close(self) -> None:
        """Stop: release this worker's claims of blocks not done (others take them at once), stop beating;
        the last to end compacts the queue (every block done: no per-block file stays)."""
        for block in self._mine - self._marked:
            if _holder(self.claim_path(block)) == self.worker:
                _remove_if_there(self.claim_path(block))
        self._heartbeat.stop()
        try:
            compact(os.path.dirname(self.folder), self.num_blocks, self._skipped)
        except OSError as err:  # the run's images are made: the litter stays, a rerun clears it
            log.warning("block queue %s not compacted: %s", self.folder, err)


def leases(output_dir: str, observer: Observer | None = None) -> list[dict[str, object]]:
    """Claims not done, for `status`: block, holder, and seconds since its heartbeat was seen to change
    (by one look at the heartbeat file's mtime against a file this process writes now: same server clock)."""
    folder = claims_dir(output_dir)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    if ALL_DONE_FILE in names:  # compacted: claims left by a crash in the compaction are of done blocks
        return []
    now = _server_now(folder)
    found = []
    for name in names:
        if not (name.startswith("block") and name[5:].isdigit()) or name + ".done" in names:
            continue
        holder = _holder(os.path.join(folder, name))
        if holder is None:
            continue
        try:
            beat_age: float | None = max(0.0, now - os.stat(os.path.join(folder, "workers", holder)).st_mtime) \
                if holder else None
        except FileNotFoundError:
            beat_age = None
        try:
            since: float | None = max(0.0, now - os.stat(os.path.join(folder, name)).st_mtime)
        except FileNotFoundError:
            since = None
        found.append({"block": int(name[5:]), "holder": holder, "heartbeat_age": beat_age, "claimed_ago": since})
    return found


def _server_now(folder: str) -> float:
    """The file server's idea of now (the mtime of a file written now), to age its other files' mtimes."""
    probe = os.path.join(folder, f".now-{uuid.uuid4().hex}")
    try:
        with open(probe, "w"):
            pass
        return os.stat(probe).st_mtime
    except OSError:
        return time.time()
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass
