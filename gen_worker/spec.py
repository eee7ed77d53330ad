"""JobSpec: everything a worker needs to know about a run, as one plain, JSON-able dataclass.

The submitter builds it once from the command line; local workers read it from a JSON file,
SLURM tasks get it pickled by submitit. GUARDED_SETTINGS are the fields that change the images:
they are recorded in the output folder and a rerun with other values is refused. The speed
options (compile, tf32, channels_last, vae_slicing) are not guarded: like the device or the GPU
model, they may change the last bits of a pixel, not what the image shows (README, "Speed").
"""
import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

DTYPES = ("bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "cpu")

# Fields that decide what each image looks like (not where or how fast it is made).
GUARDED_SETTINGS = (
    "model_path", "seed_start", "num_inference_steps", "guidance_scale", "height", "width", "dtype",
    "cfg_truncation_step", "enable_half_frame", "num_frames", "negative_prompt", "max_sequence_length",
    "batch_size", "vae_tiling",
)


def guarded_defaults():
    """What a folder recorded before a guarded setting existed was made with: that setting's default."""
    return {f.name: f.default for f in dataclasses.fields(JobSpec)
            if f.name in GUARDED_SETTINGS and f.default is not dataclasses.MISSING}


@dataclass
class JobSpec:
    prompts_csv: str
    output_dir: str
    model_path: str
    num_samples: int
    seed_start: int = 42
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    height: int = 480
    width: int = 832
    dtype: str = "bf16"
    cfg_truncation_step: Optional[int] = None
    enable_half_frame: bool = False
    num_frames: int = 1
    negative_prompt: Optional[str] = None
    max_sequence_length: Optional[int] = None
    batch_size: int = 1
    vae_tiling: bool = False  # decodes large images tile by tile: visibly different seams, so guarded
    id_column: Optional[str] = None
    prompt_column: Optional[str] = None
    device: str = "auto"
    cpu_threads: int = 1
    compile: bool = False
    tf32: bool = False
    channels_last: bool = False
    vae_slicing: bool = False
    samples_fingerprint: str = ""  # prompts.fingerprint() of the samples, checked by each worker

    def guarded_settings(self):
        return {name: getattr(self, name) for name in GUARDED_SETTINGS}

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))
