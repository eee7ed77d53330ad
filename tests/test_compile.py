"""--compile in the worker: the summary's compile counts, and the padding of a partial last block.

Compiling the tiny SD model takes minutes on a CPU (measured: 160 s for its two graphs), so these tests run
the worker with a pipeline that was not compiled: what they check is the toolkit's side (padding, counts);
bench/gpu_check.py compiles for real and checks that nothing recompiles.
"""
import os

import numpy as np
from PIL import Image

from conftest import PROMPTS, run_worker_in_process


def test_compile_counts_in_the_summary_and_padded_last_block(tmp_path, tiny_sd):
    from gen_worker.worker.pipeline import load_pipeline
    pipe = load_pipeline(tiny_sd, "fp32", "cpu")
    rows = []
    original = pipe.unet.forward

    def counting(sample, *args, **kwargs):
        rows.append(sample.shape[0])
        return original(sample, *args, **kwargs)
    pipe.unet.forward = counting
    rows_used = PROMPTS[:3]
    out, summary = run_worker_in_process(tmp_path, "compiled", pipe, tiny_sd, rows=rows_used, batch_size=2,
                                         compile="whole", cfg_truncation_step=2)
    assert summary["generated"] == 3 and summary["recompiles"] == 0 and "compiled_graphs" in summary
    # Blocks [0-1] and [2 + a padding copy]: 3 steps each, 4 rows while guided, 2 after step 2.
    assert rows == [4, 4, 2] * 2
    assert len([n for n in os.listdir(out) if n.endswith(".png")]) == 3
    rows.clear()
    eager_out, eager = run_worker_in_process(tmp_path, "eager", pipe, tiny_sd, rows=rows_used, batch_size=2,
                                             cfg_truncation_step=2)
    assert rows == [4, 4, 2, 2, 2, 1] and "recompiles" not in eager
    for name in sorted(n for n in os.listdir(out) if n.endswith(".png")):
        a, b = (np.asarray(Image.open(os.path.join(f, name)), dtype=np.int16) for f in (out, eager_out))
        assert np.abs(a - b).max() <= 1  # the padded block: only its batch composition differs
