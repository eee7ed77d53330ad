"""Result integrity, in-process: --negative_prompt."""
import numpy as np
import pytest

from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec
from gen_worker.worker.pipeline import ImageMaker, load_pipeline
from gen_worker.worker.png import to_uint8

SAMPLES = [Sample(0, "1", "a red bus", 42, "1_seed42.png"), Sample(1, "2", "two cats", 43, "2_seed43.png")]


@pytest.mark.parametrize("arch", ["sd", "wan"])
def test_negative_prompt_works_at_batch_2(request, arch):
    model = request.getfixturevalue(f"tiny_{arch}")
    pipe = load_pipeline(model, "fp32", "cpu")
    extra = {"max_sequence_length": 16} if arch == "wan" else {}
    fields = dict(prompts_csv="-", output_dir="-", model_path=model, num_inference_steps=2, height=64, width=64,
                  dtype="fp32", batch_size=2, **extra)
    plain = ImageMaker(pipe, JobSpec(**fields)).make(SAMPLES)
    negative = ImageMaker(pipe, JobSpec(**fields, negative_prompt="blurry")).make(SAMPLES)
    assert len(negative) == 2
    for a, b in zip(plain, negative):
        assert not np.array_equal(to_uint8(a), to_uint8(b))
