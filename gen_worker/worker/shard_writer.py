"""--output_format tar in the worker: a shard's samples kept in memory as the writer threads encode them, and the
shard written whole (output/shards.py) once each of its samples is written or failed.

A block of the schedule is one shard (JobSpec.block_size), so one worker writes each shard, once; a crash loses
only the shards still in memory. The PNG bytes are those the png format writes (the same provenance); the
shard's memory is about shard_size PNG files.
"""
import logging
import os
import threading
from typing import Any, Dict, Tuple

import numpy as np

from gen_worker.output import layout, provenance, shard_check, shards, verification_cache
from gen_worker.output.record import manifest_row
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec
from gen_worker.worker.png import encode_png

log = logging.getLogger(__name__)


class ShardWriter:
    def __init__(self, spec: JobSpec, worker_index: int, settings_key: str) -> None:
        self._spec, self._worker_index, self._settings_key = spec, worker_index, settings_key
        self._lock = threading.Lock()
        self._pending: Dict[int, Dict[int, Tuple[str, bytes, Dict[str, Any], Sample]]] = {}
        os.makedirs(os.path.join(spec.output_dir, shards.SHARDS_DIR), exist_ok=True)  # once, not per shard

    def add(self, sample: Sample, pixels: np.ndarray, made: Dict[str, Any]) -> bool:
        """Encode one sample (a writer thread) and keep it for its shard; `made`: provenance.for_sample."""
        with_image: Dict[str, Any] = {}

        def text_for(image: Dict[str, Any]) -> Dict[str, str]:
            with_image.update(made, image=image)
            return provenance.png_text(made, image)
        png = encode_png(pixels, text_for=text_for)
        record = shards.sample_record(manifest_row(sample), with_image)
        stem = sample.file_name[:-len(".png")]
        with self._lock:
            self._pending.setdefault(self.shard_of(sample), {})[sample.index] = (stem, png, record, sample)
        return True

    def shard_of(self, sample: Sample) -> int:
        return shards.shard_index(sample.index, self._spec.shard_size)

    def finish(self, shard: int) -> None:
        """Every sample of the shard is reported: write what was made of it (none: nothing)."""
        with self._lock:
            made = self._pending.pop(shard, {})
        if not made:
            return
        entries = [made[i] for i in sorted(made)]
        relative = f"{shards.SHARDS_DIR}/{shards.shard_name(shard)}"
        if not shards.write_shard(os.path.join(self._spec.output_dir, relative),
                                  [(stem, png, record) for stem, png, record, _ in entries]):
            log.info("%s was written by another worker meanwhile (its block was taken over): kept", relative)
            return
        # a resume need not read it again (output/shard_check.py)
        line = verification_cache.line(verification_cache.file_state(self._spec.output_dir, relative),
                                       shard_check.rows_digest([provenance.row_key(manifest_row(s)) for _, _, _, s in entries]),
                                       self._settings_key)
        with open(layout.written_file(self._spec.output_dir, self._worker_index), "a", encoding="utf-8") as f:
            f.write(line)
