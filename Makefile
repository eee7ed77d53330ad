# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed before the project, so pip keeps it: an unpinned torch would pull a multi-GB CUDA build.
# On a GPU machine pick the build you need, e.g. make TORCH_SPEC="torch==2.5.1" install
TORCH_SPEC ?= torch==2.13.0
DEMO_MODEL ?= demo_model
DEMO_OUTPUT ?= demo_output

.PHONY: install demo demo-sweep typecheck test bench clean-demo

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# metric oracles for tests/test_evaluation_protocols.py, outside site-packages: tests/_metric_oracles.py says why
	$(PY) -m pip install -q --no-deps --target $(VENV)/metric-oracles clean-fid==0.1.35 torch-fidelity==0.4.0
	touch $@

install: $(VENV)/.installed

$(DEMO_MODEL)/model_index.json: | $(VENV)/.installed
	rm -rf $(DEMO_MODEL)
	$(PY) -m gen_worker.tiny_model $(DEMO_MODEL) --arch sd

# Two CPU workers on the tiny random-weight model and the prompts shipped in examples/.
demo: $(VENV)/.installed $(DEMO_MODEL)/model_index.json
	$(PY) submit.py --cluster local --device cpu --gpu_ids 0 1 \
	    --prompts_csv examples/prompts.csv --output_dir $(DEMO_OUTPUT) --model_path $(DEMO_MODEL) \
	    --num_inference_steps 10 --height 64 --width 64 --dtype fp32

# A three-point guidance sweep on the tiny model, scored (FID, KID, CLIP score) with tiny random-weight
# feature networks against the plain demo's images as a stand-in reference set, and its report with the
# FID-versus-CLIP plot: demo_sweep/report/report.html. The scores mean nothing; the flow is the point.
demo-sweep: demo
	$(PY) -m evaluation.tiny_networks demo_sweep/networks
	$(PY) submit.py --cluster local --device cpu --gpu_ids 0 1 \
	    --prompts_csv examples/prompts.csv --output_dir demo_sweep/images --model_path $(DEMO_MODEL) \
	    --num_inference_steps 10 --height 64 --width 64 --dtype fp32 --sweep guidance_scale=1.5,4,7.5
	$(PY) -m evaluation.metrics --generated demo_sweep/images --reference_dir $(DEMO_OUTPUT) --device cpu \
	    --inception_weights demo_sweep/networks/inception.pt --clip_model demo_sweep/networks/clip \
	    --out demo_sweep/metrics.json
	$(PY) -m evaluation.report --generated demo_sweep/images --metrics demo_sweep/metrics.json \
	    --out_dir demo_sweep/report

# mypy over gen_worker/ (settings in pyproject.toml; torch, diffusers... are not analysed: seconds).
typecheck: $(VENV)/.installed
	$(PY) -m mypy

test: $(VENV)/.installed typecheck
	$(PY) -m pytest

# Everything that starts no worker, submit.py, SLURM job or container (markers: pyproject.toml): ~30 s here.
.PHONY: test-fast
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not e2e and not slurm and not container"

# CPU benchmarks on the tiny model (about 12 minutes); prints a table, writes bench/results_cpu.json.
bench: $(VENV)/.installed
	$(PY) bench/run_benchmarks.py

clean-demo:
	rm -rf $(DEMO_MODEL) $(DEMO_OUTPUT) demo_sweep
