#!/usr/bin/env bash
# Build the t2i-batch image with podman or docker (whichever works; podman preferred).
#
#   containers/build_image.sh                 # CUDA image from BASE_IMAGE (default: the
#                                             # Dockerfile's pytorch/pytorch CUDA base) -> t2i-batch:latest
#   containers/build_image.sh --local-cpu     # local CPU test: Debian base from debootstrap
#                                             # (containers/build_base_image.sh) + host's torch CPU wheel
# Options (environment variable in brackets):
#   -t, --tag TAG        image tag                                   [T2I_IMAGE=t2i-batch:latest]
#   --base IMAGE         base image                                  [BASE_IMAGE]
#   --torch SPEC         pip requirement for torch, empty = keep base's torch   [TORCH_SPEC]
#   --local-cpu          base localhost/t2i-base:bookworm (built if missing), torch from the local
#                        CPU wheel (TORCH_SPEC=torch==<wheel version>), pinned --pin-from the
#                        repo's .venv when it exists                           [T2I_LOCAL_CPU=1]
#   --pin-from PYTHON    install the exact versions that PYTHON's environment has (torch, diffusers,
#                        transformers, numpy, Pillow, ...): same numbers, same PNG bytes [T2I_PIN_FROM]
#   --wheels DIR         folder of wheels for pip --find-links during the build (podman only; not
#                        copied into the image). --local-cpu default: pip's find-links (/opt/wheels)
#   --engine podman|docker                                           [CONTAINER_ENGINE]
#   --network MODE       network for RUN steps, e.g. host            [T2I_BUILD_NETWORK]
#   --no-host-ca         do not give pip the host CA bundle during the build (podman only)
#   --no-cache           rebuild every layer
#   --build-arg K=V      passed through (e.g. DIFFUSERS_VERSION=0.35.1, PIP_EXTRA_ARGS=...)
# Run from anywhere; the build context is the repository root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TAG=${T2I_IMAGE:-t2i-batch:latest}
BASE=${BASE_IMAGE:-}
TORCH=${TORCH_SPEC-__unset__}
LOCAL_CPU=${T2I_LOCAL_CPU:-0}
WHEELS=""
ENGINE=${CONTAINER_ENGINE:-}
NETWORK=${T2I_BUILD_NETWORK:-}
HOST_CA=1
PIN_FROM=${T2I_PIN_FROM:-}
PIN_ARGS=()  # before EXTRA: an explicit --build-arg wins
EXTRA=()

while [ $# -gt 0 ]; do
    case $1 in
        -t|--tag) TAG=$2; shift ;;
        --base) BASE=$2; shift ;;
        --torch) TORCH=$2; shift ;;
        --local-cpu) LOCAL_CPU=1 ;;
        --wheels) WHEELS=$2; shift ;;
        --engine) ENGINE=$2; shift ;;
        --network) NETWORK=$2; shift ;;
        --no-host-ca) HOST_CA=0 ;;
        --no-cache) EXTRA+=(--no-cache) ;;
        --build-arg) EXTRA+=(--build-arg "$2"); shift ;;
        --pin-from) PIN_FROM=$2; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
log() { echo "[build_image] $*" >&2; }

# --- engine --------------------------------------------------------------------------------------
if [ -z "$ENGINE" ]; then
    if command -v podman >/dev/null && podman info >/dev/null 2>&1; then ENGINE=podman
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
    else log "neither podman nor a running docker daemon works (for podman here: containers/build_base_image.sh installs it)"; exit 1
    fi
fi

# --- local CPU test mode -------------------------------------------------------------------------
if [ "$LOCAL_CPU" = 1 ]; then
    BASE=${BASE:-localhost/t2i-base:bookworm}
    if [ "$BASE" = localhost/t2i-base:bookworm ] && ! $ENGINE image inspect "$BASE" >/dev/null 2>&1; then
        [ "$ENGINE" = podman ] || { log "build the base with podman, or pass --base"; exit 1; }
        "$HERE/build_base_image.sh"
    fi
    if [ -z "$WHEELS" ]; then
        WHEELS=$(pip config get global.find-links 2>/dev/null || true)
        WHEELS=${WHEELS:-/opt/wheels}
    fi
    if [ -z "$PIN_FROM" ] && [ -x "$REPO/.venv/bin/python" ]; then PIN_FROM=$REPO/.venv/bin/python; fi
    if [ "$TORCH" = __unset__ ] && [ -z "$PIN_FROM" ]; then
        # newest local CPU torch wheel for the base's python (bookworm: cp311)
        whl=$(ls "$WHEELS"/torch-*-cp311-*linux*_x86_64.whl 2>/dev/null | sort -V | tail -n1 || true)
        if [ -n "$whl" ]; then
            TORCH="torch==$(basename "$whl" | cut -d- -f2)"
        else
            log "no torch cp311 wheel in $WHEELS: using the PyTorch CPU index"
            TORCH="torch"
            EXTRA+=(--build-arg "PIP_EXTRA_ARGS=--extra-index-url https://download.pytorch.org/whl/cpu")
        fi
    fi
fi

# --- pins from a host environment ------------------------------------------------------------------
if [ -n "$PIN_FROM" ]; then
    # "torch==V" then "NAME==V ..." for every other distribution (build tools and the project excluded).
    pins=$("$PIN_FROM" - <<'PYEOF'
import importlib.metadata as md, re
found = {}
for dist in md.distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
    if name and name not in ("t2i-batch", "pip", "setuptools", "wheel"):
        found[name] = dist.version
print(f"torch=={found.pop('torch')}" if "torch" in found else "torch")
print(" ".join(f"{n}=={v}" for n, v in sorted(found.items()) if not n.startswith("nvidia-") and n != "triton"))
PYEOF
) || { log "--pin-from $PIN_FROM: cannot read its packages"; exit 1; }
    [ "$TORCH" = __unset__ ] && TORCH=$(head -n1 <<<"$pins")
    others=$(tail -n1 <<<"$pins")
    # The Dockerfile's own *_VERSION pins must agree with them.
    for arg in DIFFUSERS:diffusers TRANSFORMERS:transformers ACCELERATE:accelerate SAFETENSORS:safetensors \
               SUBMITIT:submitit CLOUDPICKLE:cloudpickle PILLOW:pillow TQDM:tqdm HF_HUB:huggingface-hub; do
        v=$(tr ' ' '\n' <<<"$others" | sed -n "s/^${arg#*:}==//p")
        PIN_ARGS+=(--build-arg "${arg%%:*}_VERSION=$v")
    done
    PIN_ARGS+=(--build-arg "EXTRA_PINS=$others")
    log "pinned to $PIN_FROM's versions ($TORCH, $(wc -w <<<"$others") more)"
fi
[ "$TORCH" = __unset__ ] && TORCH=""

ARGS=(build -f "$HERE/Dockerfile" -t "$TAG")
[ -n "$BASE" ] && ARGS+=(--build-arg "BASE_IMAGE=$BASE")
ARGS+=(--build-arg "TORCH_SPEC=$TORCH")
[ -n "$NETWORK" ] && ARGS+=(--network "$NETWORK")
if [ "$ENGINE" = podman ]; then
    # Build-time only mounts (not stored in layers, not part of the layer cache key).
    if [ -n "$WHEELS" ]; then
        [ -d "$WHEELS" ] || { log "wheels dir $WHEELS does not exist"; exit 1; }
        ARGS+=(-v "$(cd "$WHEELS" && pwd):/build-extra/wheels:ro")
    fi
    for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
        if [ "$HOST_CA" = 1 ] && [ -s "$ca" ]; then ARGS+=(-v "$ca:/build-extra/ca.crt:ro"); break; fi
    done
elif [ -n "$WHEELS" ]; then
    log "docker build cannot mount $WHEELS; torch comes from the index (set --torch/--build-arg PIP_EXTRA_ARGS)"
fi
ARGS+=("${PIN_ARGS[@]}" "${EXTRA[@]}" "$REPO")

log "$ENGINE ${ARGS[*]}"
start=$(date +%s.%N)
"$ENGINE" "${ARGS[@]}"
end=$(date +%s.%N)
size=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}')
log "built $TAG with $ENGINE in $(awk "BEGIN{printf \"%.1f\", $end-$start}") s (image size $size)"
