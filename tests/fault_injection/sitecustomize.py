"""Loaded at start-up by workers the tests start with this folder on PYTHONPATH.

Makes every sample whose prompt contains FAIL_HERE raise, as a bad prompt or an OOM would, so the
tests can check what the toolkit does with failing samples without a special hook in its code.
"""
import gen_worker.worker.pipeline as pipeline

_make = pipeline.ImageMaker.make


def _make_or_fail(self, samples):
    for sample in samples:
        if "FAIL_HERE" in sample.prompt:
            raise RuntimeError(f"injected failure for sample {sample.index}")
    return _make(self, samples)


pipeline.ImageMaker.make = _make_or_fail
