"""JobSpec: everything a worker needs to know about a run, as one plain, JSON-able dataclass.

Each field is the one definition of its setting: its type and default, its help, whether it is
recorded with the output folder (it decides what the images look like: a rerun with another
value is refused), whether the worker applies it when it loads the pipeline (at_load: a sweep's
worker loads the model again when it changes) and its checks. submit.py's flags are made from
these fields (flags.py).
The submitter builds the spec once; local workers read it from a JSON file, SLURM tasks get it
pickled by submitit. The speed options are not recorded: like the device or the GPU model, they
may change the last bits of a pixel, not what the image shows (docs/speed.md); the speed levers
(--cache, --attention_backend, --quantize, --offload) change more, and are recorded.
"""
import dataclasses
import hashlib
import json
import os
import types
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

from gen_worker.errors import T2IError, UsageError
from gen_worker.flags import at_least, at_most, check, finite, flag, flag_fields, load_time_names, multiple_of, \
    recorded_names
from gen_worker.levers import DEFAULT_ATTENTION, NO_CACHE, OFFLOAD_KINDS, QUANTIZE_KINDS, attention_backend_problem, \
    cache_problem, refusal as lever_refusal
from gen_worker.model_check import diffusers_folder, source_strings
from gen_worker.naming import LAYOUTS
from gen_worker.prompts import FORMATS as PROMPTS_FORMATS, Sample, load_samples

DTYPES = ("auto", "bf16", "fp16", "fp32")
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed
DEVICES = ("auto", "cuda", "cpu")
SCHEDULES = ("dynamic", "static")
OUTPUT_FORMATS = ("png", "tar")
COMPILE_MODES = ("whole", "regional")  # torch.compile of each denoiser, or of its repeated block (compile_repeated_blocks)
MAX_LEASE_SECONDS = 24 * 3600  # a day: a longer lease would hold a dead worker's block for the rest of the run


def diffusers_scheduler(name: str) -> Optional[str]:
    """A scheduler class diffusers exports, found in its source (importing diffusers takes seconds)."""
    root = diffusers_folder()
    known = source_strings(os.path.join(root, "schedulers", "__init__.py")) if root else None
    if known is None:
        return None  # the worker checks it again against the diffusers it imports
    schedulers = {n for n in known if n.endswith("Scheduler")}
    return None if name in schedulers else "is not a diffusers scheduler class (e.g. DPMSolverMultistepScheduler)"


def auto_dtype(device: str, compute_capabilities: Sequence[str]) -> str:
    """--dtype auto: fp32 on a CPU (bf16 is emulated there, several times slower), bf16 on GPUs of compute
    capability 8.0 or more (Ampere and newer), fp16 when any GPU is older."""
    if device == "cpu":
        return "fp32"
    try:
        oldest = min(tuple(int(part) for part in cap.split(".")) for cap in compute_capabilities)
    except ValueError:  # none known: the nodes of a SLURM run, unseen from the submit host
        return "bf16"
    return "bf16" if oldest >= (8, 0) else "fp16"


@dataclass
class JobSpec:
    # input and output
    prompts_csv: str = flag(group="data", help="prompts file: CSV, TSV, JSONL (one JSON object per line) or Parquet, by "
                                               "extension or --prompts_format; a prompt column (prompt/caption/text, "
                                               "any case) and optionally an id column (image_id/id)")
    output_dir: str = flag(group="data", help="folder for the images and the run's records")
    model_path: str = flag(group="data", recorded=True, at_load=True,
                           help="diffusers pipeline folder or hub id (safetensors only)")
    num_samples: Optional[int] = flag(None, group="data", checks=[at_least(1)],
                                      help="first N samples (default: every row x --images_per_prompt; sample i is "
                                           "row i // K, so a limit may stop inside a row)")
    id_column: Optional[str] = flag(None, group="data", help="id column (default: image_id or id; none: row number)")
    prompt_column: Optional[str] = flag(None, group="data", help="prompt column (default: prompt, caption or text)")
    prompts_format: Optional[str] = flag(None, group="data", choices=PROMPTS_FORMATS,
                                         help="format of --prompts_csv (default: by its extension; CSV if another)")
    # Not recorded in the images (a PNG member of a shard is the very file the png format writes): the folder's
    # record keeps them, and a folder never changes format (output/shard_check.py)
    output_format: str = flag("png", group="data", choices=OUTPUT_FORMATS,
                              help="png: one file per image; tar: WebDataset shards shards/NNNNNN.tar of --shard_size "
                                   "samples ({stem}.png and {stem}.json each), a few files per thousand images for "
                                   "cluster file systems (docs/output-at-scale.md)")
    shard_size: int = flag(1000, group="data", checks=[at_least(1)],
                           help="--output_format tar: samples per shard, a multiple of --batch_size; a worker makes "
                                "a whole shard and writes it at once")
    # where to run
    device: str = flag("auto", group="run", choices=DEVICES, help="auto: cuda when a GPU is visible")
    cpu_threads: int = flag(1, group="run", checks=[at_least(1)],
                            help="torch CPU threads per worker; fixed so images do not depend on the number of workers")
    schedule: str = flag("dynamic", group="run", choices=SCHEDULES,
                         help="dynamic: workers claim blocks (of batch_size samples) from a queue in the output folder, "
                              "taking over those of a dead worker, and a run may be joined; static: worker k of N "
                              "makes blocks k, k+N, ... (same images either way)")
    lease_seconds: float = flag(120.0, group="run", checks=[finite, at_least(1), at_most(MAX_LEASE_SECONDS)],
                                help="--schedule dynamic: a worker whose generation has made no progress (no "
                                     "denoising step, no heartbeat) for this long loses its block to the others; "
                                     "a joined run keeps its own. A worker stuck in a pipeline call for "
                                     "max(3 leases, 5 min) exits (either schedule). At most a day")
    # generation settings: recorded
    seed_start: int = flag(42, group="generation", recorded=True, checks=[at_least(0), at_most(MAX_SEED)],
                           help="seed of sample 0; sample i uses seed_start+i")
    images_per_prompt: int = flag(1, group="generation", recorded=True, checks=[at_least(1)], metavar="K",
                                  help="images of each prompt: sample i = row*K + k gets seed seed_start+i")
    layout: str = flag("flat", group="generation", recorded=True, choices=LAYOUTS,
                       help="flat: {image_id}_seed{seed}.png; geneval: <row:05d>/metadata.jsonl (the prompt's "
                            "JSON) and <row:05d>/samples/<k:04d>.png, as GenEval reads them")
    num_inference_steps: int = flag(20, group="generation", recorded=True, checks=[at_least(1)],
                                    help="denoising steps")
    guidance_scale: Optional[float] = flag(None, group="generation", recorded=True, checks=[finite, at_least(0)],
                                           help="classifier-free guidance scale (default: the pipeline's own, "
                                                "e.g. 3.5 for Flux, 7.5 for SD, read from diffusers and recorded)")
    height: int = flag(480, group="generation", recorded=True, checks=[at_least(1), multiple_of(8)],
                       help="image height in pixels (multiple of 8)")
    width: int = flag(832, group="generation", recorded=True, checks=[at_least(1), multiple_of(8)],
                      help="image width in pixels (multiple of 8)")
    dtype: str = flag("auto", group="generation", recorded=True, at_load=True, choices=DTYPES,
                      help="weights and compute precision; auto: fp32 on CPU, bf16 on GPUs of compute capability "
                           "8.0+, fp16 on older ones (SLURM: bf16 unless --device cpu, the nodes' GPUs being "
                           "unknown here); the precision used is recorded")
    scheduler: Optional[str] = flag(None, group="generation", recorded=True, checks=[diffusers_scheduler],
                                    metavar="CLASS",
                                    help="diffusers scheduler class to sample with, e.g. DPMSolverMultistepScheduler, "
                                         "made from the model's scheduler config (default: the model's own)")
    cfg_truncation_step: Optional[int] = flag(None, group="generation", recorded=True, checks=[at_least(0)],
                                              metavar="K",
                                              help="turn classifier-free guidance off from step K on (later steps "
                                                   "cost one forward pass instead of two); 0: no guidance at all")
    enable_half_frame: bool = flag(False, group="generation", recorded=True,
                                   help="video pipelines: generate half of --num_frames (no effect on image pipelines)")
    num_frames: int = flag(1, group="generation", recorded=True, checks=[at_least(1)],
                           help="frames asked of a video pipeline (the first one is saved); ignored by image pipelines")
    negative_prompt: Optional[str] = flag(None, group="generation", recorded=True,
                                          help="negative prompt for every sample (default: none)")
    max_sequence_length: Optional[int] = flag(None, group="generation", recorded=True, checks=[at_least(1)],
                                              help="text encoder sequence length, for pipelines that take it "
                                                   "(default: the pipeline's)")
    batch_size: int = flag(1, group="generation", recorded=True, checks=[at_least(1)],
                           help="prompts per pipeline call, one generator (seed) per sample; images are the same for "
                                "any number of GPUs at a given batch size, but may differ in the last bits between "
                                "batch sizes")
    vae_tiling: bool = flag(False, group="generation", recorded=True, at_load=True,
                            help="decode large images tile by tile to save memory (changes the images slightly at "
                                 "the seams)")
    safety_checker: bool = flag(False, group="generation", recorded=True, at_load=True,
                                help="keep the model's safety checker (SD 1.x/2.x folders that have one): flagged "
                                     "images come back black, and are listed in nsfw_flagged_gpu{k}.txt (default: "
                                     "loaded without it, so that evaluations see the model's own output)")
    # speed: not recorded
    compile: Optional[str] = flag(None, group="speed", at_load=True, choices=COMPILE_MODES, bare="whole",
                                  help="torch.compile the denoiser (unet/transformer): faster on GPU after a warm-up "
                                       "of minutes; --compile alone: the whole denoiser; --compile regional: one "
                                       "block class, compiled once for all its repeats (seconds of warm-up)")
    tf32: bool = flag(False, group="speed", at_load=True,
                      help="TF32 matmuls on Ampere and newer GPUs: only --dtype fp32 is affected (faster, less precise)")
    channels_last: bool = flag(False, group="speed", at_load=True,
                               help="channels-last memory format for convolutional denoisers and VAEs (UNet models)")
    vae_slicing: bool = flag(False, group="speed", at_load=True,
                             help="decode the images of a batch one at a time: less memory at large --batch_size")
    # speed levers (issue 20): each changes the pixels, so each is recorded and sweepable; refused before any worker
    # starts where the family (families.py) or the device cannot use it (levers.py)
    cache: str = flag(NO_CACHE, group="speed", recorded=True, checks=[cache_problem], metavar="KIND",
                      help="reuse denoiser outputs across steps (Flux, Wan): none, first_block:T (first-block cache, "
                           "threshold T), taylorseer, magcache (Flux), pab; KIND:key=value,... sets its diffusers "
                           "options")
    attention_backend: str = flag(DEFAULT_ATTENTION, group="speed", recorded=True, checks=[attention_backend_problem],
                                  metavar="NAME", help="diffusers' attention backend of the denoiser (Flux, Wan): "
                                                       "native, flash, _flash_3, sage, flex, xformers, ... (most need "
                                                       "CUDA and their package)")
    quantize: str = flag("none", group="speed", recorded=True, at_load=True, choices=QUANTIZE_KINDS,
                         help="the denoiser's weights: int8wo (int8 weight-only, torchao; CPU too), fp8wo (float8 "
                              "weight-only, torchao; CUDA 8.9+), fp8 (stored in float8, computed in --dtype)")
    offload: str = flag("none", group="speed", recorded=True, at_load=True, choices=OFFLOAD_KINDS,
                        help="for a model larger than the GPU: model (one component on the GPU at a time), group "
                             "(the denoiser's blocks streamed in); CUDA only")
    # set by the submitter
    samples_fingerprint: str = ""  # prompts.fingerprint() of the samples, checked by each worker
    # model_check.identify_model(): {"fingerprint", "components", "revision"}; checked by each worker
    model_identity: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # No class-level default: a spec unpickled from an older version has no such attribute at all.
    spec_version: str = dataclasses.field(default_factory=lambda: _current_version())

    def __post_init__(self) -> None:
        check(JobSpec, vars(self))
        problem = lever_refusal(self.model_path, self.device, self.cache, self.attention_backend, self.quantize,
                                self.offload, self.compile)
        if problem:
            raise UsageError(problem)
        if self.output_format == "tar" and self.layout == "geneval":
            raise UsageError("--output_format tar writes shards, --layout geneval a folder per prompt: choose one")
        if self.output_format == "tar" and self.shard_size % self.batch_size:
            raise UsageError(f"--shard_size {self.shard_size} must be a multiple of --batch_size {self.batch_size} "
                             "(a shard is made of whole pipeline calls)")
        if self.num_samples and self.seed_start + self.num_samples - 1 > MAX_SEED:
            raise UsageError(f"--seed_start {self.seed_start} + {self.num_samples} samples goes past {MAX_SEED}, "
                             "the largest seed torch's generator takes")

    def block_size(self) -> int:
        """The schedules' unit of work, in samples: a pipeline call (--batch_size), or a whole shard with
        --output_format tar, so that one worker writes each shard."""
        return self.shard_size if self.output_format == "tar" else self.batch_size

    def recorded_settings(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in RECORDED_SETTINGS}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        values = json.loads(text)
        check_version(values.get("spec_version"))
        return cls(**values)


RECORDED_SETTINGS = recorded_names(JobSpec)
LOAD_SETTINGS = load_time_names(JobSpec)  # applied when the pipeline is loaded: a change is a new load
# What a spec looks like (every field's name, type and default), so that any change of fields changes
# it: a worker refuses a spec from other code (an older container image, a job queued before an update).
_SHAPE = [(f.name, str(f.type), None if f.default is dataclasses.MISSING else f.default)
          for f in dataclasses.fields(JobSpec) if f.name != "spec_version"]
SPEC_VERSION = hashlib.sha256(repr(_SHAPE).encode()).hexdigest()[:12]


def _current_version() -> str:
    return SPEC_VERSION


class SpecVersionError(T2IError):
    pass


def check_version(version: Optional[str]) -> None:
    if version != SPEC_VERSION:
        raise SpecVersionError(f"this worker's code (spec version {SPEC_VERSION}) differs from the submitter's "
                               f"(spec version {version or 'none'}): rebuild the container image (or update this "
                               "checkout) so that both run the same t2i-batch, then submit again")


def recorded_defaults() -> Mapping[str, Any]:
    """What a folder recorded before a recorded setting existed was made with: that setting's default
    (read-only: the resume check asks once per image)."""
    return _RECORDED_DEFAULTS


_RECORDED_DEFAULTS = types.MappingProxyType({f.name: f.default for f in flag_fields(JobSpec)
                                             if f.name in RECORDED_SETTINGS and f.default is not dataclasses.MISSING})


def spec_samples(spec: JobSpec) -> list[Sample]:
    """The samples of a run, as its spec asks for them."""
    return load_samples(spec.prompts_csv, spec.seed_start, spec.num_samples, spec.id_column, spec.prompt_column,
                        images_per_prompt=spec.images_per_prompt, layout=spec.layout,
                        prompts_format=spec.prompts_format)
