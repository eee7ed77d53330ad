"""A worker's progress, as its watch (worker/watch.py) sees it: the pipeline's models pulse at every denoising
step of every family (PixArt-Sigma has no step callback: the hooks are on the denoiser), a warm-up call of
--compile gets its grace, and the watchdog fires only inside a call that has stopped making progress."""
import contextlib
import time

import pytest

from conftest import wait_for
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec
from gen_worker.worker.pipeline import COMPILE_GRACE_SECONDS, ImageMaker, denoisers
from gen_worker.worker.watch import ProgressWatch

SAMPLES = [Sample(0, "1", "a red bus", 42, "a.png"), Sample(1, "2", "two cats on a sofa", 43, "b.png")]
STEPS = 3


class Recorder:
    """What ImageMaker tells a watch: its calls (with their grace) and its models' pulses."""

    def __init__(self):
        self.pulses, self.graces = 0, []

    @contextlib.contextmanager
    def calling(self, grace=0.0):
        self.graces.append(grace)
        yield

    def pulse(self):
        self.pulses += 1


def _maker(pipe, **changes):
    fields = dict(prompts_csv="-", output_dir="-", model_path="-", num_samples=2, num_inference_steps=STEPS,
                  height=32, width=32, dtype="fp32", max_sequence_length=16)
    fields.update(changes)
    maker = ImageMaker(pipe, JobSpec(**fields))
    maker.watch = Recorder()
    return maker


@pytest.mark.parametrize("arch", ["sd", "sdxl", "sd3", "flux", "pixart", "sana", "wan", "wan22"])
def test_every_denoising_step_of_every_family_pulses(arch, pipes):
    pipe = pipes(arch)
    maker = _maker(pipe, **({"max_sequence_length": None} if arch in ("sd", "sdxl") else {}))
    seen = []  # the pulses counted when each denoiser call starts its work
    originals = [(m, m.forward) for m in denoisers(pipe)]
    for model, forward in originals:
        model.forward = lambda *a, _forward=forward, **k: seen.append(maker.watch.pulses) or _forward(*a, **k)
    try:
        maker.make(SAMPLES)
    finally:
        for model, forward in originals:
            model.forward = forward
    assert len(seen) >= STEPS and maker.watch.graces == [0.0]
    assert all(a < b for a, b in zip(seen, seen[1:]))  # a pulse between any two denoiser calls
    assert maker.watch.pulses > seen[-1] + 1  # and after the last step: its end, the VAE decoding


def test_a_compile_warm_up_call_gets_a_grace_once_per_batch_shape(pipes):
    maker = _maker(pipes("sd"), max_sequence_length=None, compile="whole", batch_size=2)  # compiles nothing here
    maker.make(SAMPLES)
    maker.make(SAMPLES[:1])  # padded to the batch size: the same shape
    assert maker.watch.graces == [COMPILE_GRACE_SECONDS, 0.0]


def test_the_watchdog_fires_once_after_the_stall_limit_and_only_inside_a_stuck_call():
    stalls = []
    watch = ProgressWatch(0.2, stall_limit=0.6, on_stall=stalls.append)
    try:
        time.sleep(1.0)  # outside a pipeline call (claiming, waiting for others): never stuck
        assert stalls == [] and watch.stalled_seconds == 0
        with watch.calling():
            wait_for(lambda: stalls, 5, what="the watchdog")
            time.sleep(0.5)
        assert stalls == [pytest.approx(0.6)]  # once
        wait_for(lambda: watch.stalled_seconds == 0, 5, what="progress after the call")
    finally:
        watch.stop()


def test_steps_keep_the_watchdog_quiet_however_long_the_call():
    stalls = []
    watch = ProgressWatch(1.0, stall_limit=1.0, on_stall=stalls.append)
    try:
        with watch.calling():
            for _ in range(150):  # 3 s of steps, 3 stall limits
                watch.pulse()
                time.sleep(0.02)
        assert stalls == []
    finally:
        watch.stop()
