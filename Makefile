# hfcompress developer commands. On a fresh machine:
#   make demo   -> set up, fetch the offline assets, run the default distillation recipe
#   make test   -> set up, run the test suite (CPU, offline, a few minutes)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Tests and the demo never reach the Hub: offline mode and a private HF_HOME, so a warm cache hides nothing.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup assets demo test test-slow lint bench clean

setup: $(VENV)/.installed

# torch first and alone: a range would pull a CUDA build of several GB (shared/ASSETS.md).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,onnx,bnb,plots]"
	touch $@

assets: setup
	$(PY) scripts/fetch_assets.py

demo: assets
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 \
		--mixed_precision no --dynamo_backend no recipes/distill_bert.py --overwrite_output true

test: setup
	$(OFFLINE) HF_HOME=$$(mktemp -d) $(PY) -m pytest -q

test-slow: assets
	$(OFFLINE) HF_HOME=$$(mktemp -d) $(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check hfcompress recipes scripts tests

bench: assets
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_distill.py --seeds 42,43,44
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_prune.py --teacher_dir scripts/results/work/teacher --num_train_epochs 1
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_quantize.py --teacher_dir scripts/results/work/teacher

clean:
	rm -rf $(VENV) outputs .cache
