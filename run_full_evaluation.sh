#!/usr/bin/env bash
# Full evaluation in one command: COCO captions -> prompts.csv -> images -> FID, KID + CLIP score -> report.
#
#   USE_MULTIGPU=true GPU_IDS="0 1 2 3" MODEL_PATH=/models/sd15 NUM_SAMPLES=5000 \
#   COCO_CAPTIONS=annotations/captions_val2014.json COCO_IMAGES=val2014 \
#   INCEPTION_WEIGHTS=weights/inception-2015-12-05.pt CLIP_MODEL=weights/clip-vit-large-patch14 \
#   bash run_full_evaluation.sh
#
# Every step is resumable: rerun the same command after a crash and only what is missing is done.
# Variables (defaults in brackets):
#   MODEL_PATH          diffusers pipeline folder or hub id [required]
#   OUTPUT_DIR          evaluation folder: prompts.csv, images/, metrics.json, report/ [./evaluation_output]
#   PROMPTS_CSV         prompts to use; when unset, built from COCO_CAPTIONS into OUTPUT_DIR/prompts.csv
#   COCO_CAPTIONS       COCO captions JSON (captions_val2014.json / captions_val2017.json)
#   COCO_IMAGES         folder of the COCO images (FID reference; checked to hold the selected files)
#   NUM_SAMPLES         number of prompts to generate [all]; from COCO: a seeded subset of that many images
#   ALL_CAPTIONS        true: every caption of each selected COCO image, not just one [false]
#   SUBSET_SEED         seed of the COCO subset choice [0]
#   REFERENCE_DIR       FID reference images [COCO_IMAGES]
#   REFERENCE_STATS     .npz of reference statistics: used if it exists, else computed and saved there
#   INCEPTION_WEIGHTS   inception-2015-12-05.pt (FID) [required unless SKIP_FID=true]
#   CLIP_MODEL          local transformers CLIP folder [required unless SKIP_CLIP=true]
#   SKIP_FID, SKIP_CLIP true to leave a metric out [false]
#   FID_PROTOCOL        FID/KID input: clean or legacy_tensorflow (metrics --protocol) [clean]
#   SKIP_CMMD           true: no CMMD (metrics --no_cmmd) [false: CMMD with CLIP_MODEL against the reference]
#   PICKSCORE_MODEL     local PickScore folder: per-image PickScore (metrics --pickscore_model) [none]
#   HPS_MODEL           local HPS v2.1 folder: per-image HPS v2.1 (metrics --hps_model) [none]
#   IMAGEREWARD_MODEL   local ImageReward folder: per-image ImageReward (metrics --imagereward_model) [none]
#   CLUSTER             local or slurm [local]
#   USE_MULTIGPU        local: true = every GPU in GPU_IDS (or every visible GPU), false = the first one [true]
#   GPU_IDS             local: GPU ids, space-separated [every visible GPU]
#   GPUS                slurm: number of GPUs (one task each) [8]
#   SLURM_ARGS          slurm: more submit.py flags, e.g. "--partition gpu --time 720"
#   Any submit.py setting of the "where to run", generation and speed groups (python submit.py --help), as
#                       its name in upper case: passed as its flag when set [submit.py's default], e.g.
#                       DEVICE SEED_START NUM_INFERENCE_STEPS GUIDANCE_SCALE HEIGHT WIDTH DTYPE CFG_TRUNCATION_STEP
#                       IMAGES_PER_PROMPT NEGATIVE_PROMPT SCHEDULER BATCH_SIZE; a switch (ENABLE_HALF_FRAME,
#                       COMPILE, ...) is set by true, 1 or yes, left off by false, 0 or no. The metrics and the
#                       report read the settings from the images' folder
#   SWEEP               settings to sweep, each NAME=V1,V2,... or NAME=[JSON list] (space-separated for several),
#                       e.g. SWEEP='guidance_scale=1.5,3,5,7.5 negative_prompt=["blurry, low quality", "ugly"]':
#                       submit.py --sweep per setting (gen_worker/env_settings.py); every configuration
#                       is scored against the same reference statistics and compared in the report
#   GENERATE_ARGS       more submit.py flags, e.g. "--container IMAGE"
#   METRICS_DEVICE METRICS_BATCH_SIZE  [auto 64]
#   METRICS_CLUSTER     local: score in this process; slurm: features and per-image scores as SLURM array tasks
#                       over slices of the images (metrics --cluster slurm, GPUS tasks), joined here [local]
#   METRICS_SLURM_ARGS  METRICS_CLUSTER=slurm: evaluation.metrics' SLURM flags, e.g. "--partition gpu --time 120"
#                       [SLURM_ARGS]
#   ALLOW_INCOMPLETE    true: compute metrics even if some samples failed (metrics --allow_incomplete) [false]
#   ALLOW_UNVERIFIED    true: score images whose embedded provenance does not match their folder's record
#                       (metrics --allow_unverified; recorded in metrics.json and shown in the report) [false]
#   The images may be PNG files or tar shards (GENERATE_ARGS="--output_format tar"): the same numbers.
#   PYTHON              the Python to use [.venv/bin/python beside this script if present, else python3]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$HERE/.venv/bin/python" ]]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi

fail() { echo "run_full_evaluation.sh: error: $*" >&2; exit 2; }
is_true() { [[ "${1,,}" == "true" || "$1" == "1" || "${1,,}" == "yes" ]]; }
step() { echo; echo "==== $*"; }

[[ -n "${MODEL_PATH:-}" ]] || fail "set MODEL_PATH to a diffusers pipeline folder or hub id"
OUTPUT_DIR="${OUTPUT_DIR:-./evaluation_output}"
CLUSTER="${CLUSTER:-local}"
[[ "$CLUSTER" == "local" || "$CLUSTER" == "slurm" ]] || fail "CLUSTER must be local or slurm (got $CLUSTER)"
METRICS_CLUSTER="${METRICS_CLUSTER:-local}"
[[ "$METRICS_CLUSTER" == "local" || "$METRICS_CLUSTER" == "slurm" ]] \
    || fail "METRICS_CLUSTER must be local or slurm (got $METRICS_CLUSTER)"
SKIP_FID="${SKIP_FID:-false}"
SKIP_CLIP="${SKIP_CLIP:-false}"
REFERENCE_DIR="${REFERENCE_DIR:-${COCO_IMAGES:-}}"
is_true "$SKIP_FID" || [[ -n "${INCEPTION_WEIGHTS:-}" ]] || fail "set INCEPTION_WEIGHTS (inception-2015-12-05.pt) or SKIP_FID=true"
is_true "$SKIP_CLIP" || [[ -n "${CLIP_MODEL:-}" ]] || fail "set CLIP_MODEL (a local CLIP folder) or SKIP_CLIP=true"
if ! is_true "$SKIP_FID" && [[ -z "$REFERENCE_DIR" ]] && [[ ! -f "${REFERENCE_STATS:-}" ]]; then
    fail "FID needs reference images (COCO_IMAGES or REFERENCE_DIR) or an existing REFERENCE_STATS file"
fi
# submit.py's other settings the caller set, by their names: its flags are declared once (gen_worker/spec.py),
# read here from the gen_worker beside this script; a bad value stops the script before any work.
mapfile -d '' setting_args < <(PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m gen_worker.env_settings)
wait "$!" || exit
mkdir -p "$OUTPUT_DIR"
IMAGES_DIR="$OUTPUT_DIR/images"
REFERENCE_LIST=""

step "1/4 prompts"
if [[ -z "${PROMPTS_CSV:-}" ]]; then
    [[ -n "${COCO_CAPTIONS:-}" ]] || fail "set PROMPTS_CSV, or COCO_CAPTIONS to build it from COCO captions"
    PROMPTS_CSV="$OUTPUT_DIR/prompts.csv"
    REFERENCE_LIST="$OUTPUT_DIR/reference_images.txt"
    prompt_args=(--captions "$COCO_CAPTIONS" --out "$PROMPTS_CSV" --seed "${SUBSET_SEED:-0}"
                 --reference_list "$REFERENCE_LIST")
    if is_true "${ALL_CAPTIONS:-false}"; then prompt_args+=(--all_captions); else prompt_args+=(--one_per_image); fi
    [[ -n "${NUM_SAMPLES:-}" ]] && prompt_args+=(--num_images "$NUM_SAMPLES")
    [[ -n "${COCO_IMAGES:-}" ]] && prompt_args+=(--images_dir "$COCO_IMAGES")
    "$PYTHON" -m evaluation.coco_prompts "${prompt_args[@]}"
fi
echo "prompts: $PROMPTS_CSV"

step "2/4 generation ($CLUSTER)"
gen_args=(--cluster "$CLUSTER" --prompts_csv "$PROMPTS_CSV" --output_dir "$IMAGES_DIR" --model_path "$MODEL_PATH")
gen_args+=("${setting_args[@]}")
# From COCO with ALL_CAPTIONS the CSV has more rows than NUM_SAMPLES images: generate them all.
if [[ -n "${NUM_SAMPLES:-}" && -z "$REFERENCE_LIST" ]]; then gen_args+=(--num_samples "$NUM_SAMPLES"); fi
# A sweep writes one run folder per configuration under IMAGES_DIR (and IMAGES_DIR/sweep.json): the
# metrics and the report below read them all from IMAGES_DIR.
if [[ "$CLUSTER" == "local" ]]; then
    if [[ -n "${GPU_IDS:-}" ]]; then
        read -r -a gpu_list <<< "$GPU_IDS"
        if is_true "${USE_MULTIGPU:-true}"; then gen_args+=(--gpu_ids "${gpu_list[@]}"); else gen_args+=(--gpu_ids "${gpu_list[0]}"); fi
    elif ! is_true "${USE_MULTIGPU:-true}"; then
        gen_args+=(--gpu_ids 0)
    fi
else
    read -r -a slurm_extra <<< "${SLURM_ARGS:-}"
    gen_args+=(--gpus "${GPUS:-8}" --wait "${slurm_extra[@]}")
fi
read -r -a generate_extra <<< "${GENERATE_ARGS:-}"
gen_args+=("${generate_extra[@]}")
status=0
"$PYTHON" "$HERE/submit.py" "${gen_args[@]}" || status=$?
if [[ $status -ne 0 ]]; then
    if [[ $status -eq 2 || $status -eq 130 ]] || ! is_true "${ALLOW_INCOMPLETE:-false}"; then
        echo "run_full_evaluation.sh: generation did not finish (exit $status); fix the cause and rerun this command" >&2
        exit "$status"
    fi
    echo "ALLOW_INCOMPLETE=true: scoring the images that exist" >&2
fi

step "3/4 metrics"
metric_args=(--generated "$IMAGES_DIR" --prompts_csv "$PROMPTS_CSV" --out "$OUTPUT_DIR/metrics.json"
             --device "${METRICS_DEVICE:-auto}" --batch_size "${METRICS_BATCH_SIZE:-64}")
if is_true "$SKIP_FID"; then
    metric_args+=(--no_fid)
else
    metric_args+=(--inception_weights "$INCEPTION_WEIGHTS")
    if [[ -n "${REFERENCE_STATS:-}" && -f "$REFERENCE_STATS" ]]; then
        metric_args+=(--reference_stats "$REFERENCE_STATS")
    else
        metric_args+=(--reference_dir "$REFERENCE_DIR")
        [[ -n "$REFERENCE_LIST" ]] && metric_args+=(--reference_list "$REFERENCE_LIST")
        [[ -n "${REFERENCE_STATS:-}" ]] && metric_args+=(--save_reference_stats "$REFERENCE_STATS")
    fi
fi
if is_true "$SKIP_CLIP"; then metric_args+=(--no_clip); else metric_args+=(--clip_model "$CLIP_MODEL"); fi
[[ -n "${FID_PROTOCOL:-}" ]] && metric_args+=(--protocol "$FID_PROTOCOL")
is_true "${SKIP_CMMD:-false}" && metric_args+=(--no_cmmd)
[[ -n "${PICKSCORE_MODEL:-}" ]] && metric_args+=(--pickscore_model "$PICKSCORE_MODEL")
[[ -n "${HPS_MODEL:-}" ]] && metric_args+=(--hps_model "$HPS_MODEL")
[[ -n "${IMAGEREWARD_MODEL:-}" ]] && metric_args+=(--imagereward_model "$IMAGEREWARD_MODEL")
# The metrics refuse a folder that lacks images unless told, as the generation step above does.
is_true "${ALLOW_INCOMPLETE:-false}" && metric_args+=(--allow_incomplete)
is_true "${ALLOW_UNVERIFIED:-false}" && metric_args+=(--allow_unverified)
if [[ "$METRICS_CLUSTER" == "slurm" ]]; then
    read -r -a metrics_slurm <<< "${METRICS_SLURM_ARGS-${SLURM_ARGS:-}}"
    metric_args+=(--cluster slurm --gpus "${GPUS:-8}" "${metrics_slurm[@]}")
fi
"$PYTHON" -m evaluation.metrics "${metric_args[@]}"

step "4/4 report"
"$PYTHON" -m evaluation.report --generated "$IMAGES_DIR" --metrics "$OUTPUT_DIR/metrics.json" \
    --prompts_csv "$PROMPTS_CSV" --out_dir "$OUTPUT_DIR/report"

echo
echo "done: images in $IMAGES_DIR${SWEEP:+ (one folder per configuration)}, scores in $OUTPUT_DIR/metrics.json, report in $OUTPUT_DIR/report/report.html"
