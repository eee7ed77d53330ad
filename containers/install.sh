#!/bin/sh
# Install t2i-batch's Python environment into the image's interpreter.  Shared by the Dockerfile
# and t2i-batch.def so both recipes build the same environment.
#
#   install.sh deps      torch (kept from the base image, or TORCH_SPEC), then the project's
#                        dependencies (read from pyproject.toml) with the *_VERSION pins below
#   install.sh project   pip install the project source in $T2I_SRC (no deps: the deps step did)
#
# Inputs (environment; the Dockerfile passes its build args):
#   T2I_SRC        project source dir (default /opt/t2i-batch); must hold pyproject.toml
#   TORCH_SPEC     empty or "base": keep the base image's torch (a CUDA base has it), install plain
#                  `torch` from the index only if the base has none; else a pip requirement, e.g.
#                  "torch==2.13.0+cpu" (the local CPU test) or "torch==2.7.1"
#   PIP_EXTRA_ARGS extra pip arguments for every pip call (e.g. "--index-url URL")
#   DIFFUSERS_VERSION TRANSFORMERS_VERSION ACCELERATE_VERSION SAFETENSORS_VERSION SUBMITIT_VERSION
#   CLOUDPICKLE_VERSION PILLOW_VERSION TQDM_VERSION HF_HUB_VERSION
#                  "1.2.3" -> ==1.2.3; ">=1.2" (any operator) used as is; empty -> unpinned
#   EXTRA_PINS     more constraints, space-separated ("numpy==2.4.6 tokenizers==0.23.3"; empty or
#                  "none": nothing): build_image.sh --pin-from copies a host environment's versions
#   /build-extra   optional build-time mount (podman build -v ...:/build-extra:ro), nothing of it
#                  stays in the image: wheels/ -> pip --find-links, ca.crt -> CA bundle for pip
#                  (hosts behind a TLS-intercepting proxy)
set -eu

MODE=${1:?usage: install.sh deps|project}
T2I_SRC=${T2I_SRC:-/opt/t2i-batch}
SHARE=/usr/local/share/t2i-batch
CONSTRAINTS=$SHARE/constraints.txt

# Interpreter: the one first on PATH (conda's in pytorch/pytorch images, /usr/bin/python3 on Debian).
PY=$(command -v python3 || command -v python)
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
       PIP_NO_WARN_SCRIPT_LOCATION=1 PIP_PROGRESS_BAR=off
# Debian's python is "externally managed" (PEP 668); inside an image installing into it is fine.
export PIP_BREAK_SYSTEM_PACKAGES=1
if [ -s /build-extra/ca.crt ]; then
    export PIP_CERT=/build-extra/ca.crt SSL_CERT_FILE=/build-extra/ca.crt REQUESTS_CA_BUNDLE=/build-extra/ca.crt
fi
if [ -d /build-extra/wheels ]; then
    export PIP_FIND_LINKS=/build-extra/wheels
fi
pip() { "$PY" -m pip "$@" ${PIP_EXTRA_ARGS:-}; }
# Private temp dir (pip, torch's inductor cache on import), removed on exit: leaves /tmp clean.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/t2i-install.XXXXXX"); export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
[ "${TORCH_SPEC:-}" = base ] && TORCH_SPEC=""

spec() {  # spec NAME VERSION -> requirement string, or nothing when VERSION is empty
    case $2 in
        "") ;;
        [\<\>=!~]*) echo "$1$2" ;;
        *) echo "$1==$2" ;;
    esac
}

case $MODE in
deps)
    mkdir -p "$SHARE"
    # `python` must exist (Debian only ships python3 unless python-is-python3 is installed).
    command -v python >/dev/null || ln -s "$PY" /usr/local/bin/python

    if [ -n "${TORCH_SPEC:-}" ]; then
        echo "[install] torch: $TORCH_SPEC"
        pip install "$TORCH_SPEC"
    elif "$PY" -c 'import torch' 2>/dev/null; then
        echo "[install] torch: keeping the base image's torch"
    else
        echo "[install] WARNING: base image has no torch and TORCH_SPEC is empty: installing torch" \
             "from the index (on x86_64 Linux PyPI serves the large CUDA build)"
        pip install torch
    fi
    # Pin the installed torch so nothing below upgrades or replaces it.
    "$PY" -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > "$CONSTRAINTS"
    for kv in diffusers:${DIFFUSERS_VERSION:-} transformers:${TRANSFORMERS_VERSION:-} \
              accelerate:${ACCELERATE_VERSION:-} safetensors:${SAFETENSORS_VERSION:-} \
              submitit:${SUBMITIT_VERSION:-} cloudpickle:${CLOUDPICKLE_VERSION:-} \
              pillow:${PILLOW_VERSION:-} tqdm:${TQDM_VERSION:-} \
              huggingface-hub:${HF_HUB_VERSION:-}; do
        spec "${kv%%:*}" "${kv#*:}"
    done >> "$CONSTRAINTS"
    [ "${EXTRA_PINS:-none}" = none ] || echo "$EXTRA_PINS" | tr -s ' ' '\n' | grep . >> "$CONSTRAINTS"
    echo "[install] constraints:"; sed 's/^/    /' "$CONSTRAINTS"

    # Requirements = pyproject's [project].dependencies (single source of truth) + cloudpickle
    # (submitit pickles jobs with it) + the build backend, so that the project step needs no index.
    "$PY" - "$T2I_SRC/pyproject.toml" > "$SHARE/requirements.txt" <<'PYEOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
reqs = list(project.get("dependencies", []))
reqs += ["cloudpickle", "setuptools>=64", "wheel"]
print("\n".join(reqs))
PYEOF
    pip install -c "$CONSTRAINTS" -r "$SHARE/requirements.txt"
    # Smoke test: fails the build if an import is broken (e.g. transformers disabling an old torch).
    "$PY" - <<'PYEOF'
import importlib.metadata as md
import torch, diffusers, transformers, accelerate, safetensors, submitit, cloudpickle, PIL, tqdm
assert transformers.utils.is_torch_available(), f"transformers rejects torch {torch.__version__}"
print("[install] ok:", ", ".join(f"{p} {md.version(p)}" for p in
      ["torch", "diffusers", "transformers", "accelerate", "safetensors", "huggingface-hub",
       "submitit", "cloudpickle", "pillow", "numpy", "tqdm"]))
PYEOF
    ;;
project)
    # --no-deps: the deps step installed everything pyproject.toml lists (and reruns whenever
    # pyproject.toml changes); --no-build-isolation: no index access for a code-only rebuild.
    pip install --no-deps --no-build-isolation "$T2I_SRC"
    rm -rf "$T2I_SRC/build" "$T2I_SRC"/*.egg-info
    # Readable (and dirs enterable) by any uid: the image runs as the calling user.
    chmod -R a+rX "$T2I_SRC" "$SHARE"
    "$PY" -c 'import gen_worker; print("[install] gen_worker from", gen_worker.__file__)'
    ;;
*)
    echo "usage: install.sh deps|project" >&2; exit 2 ;;
esac
