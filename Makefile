# hfcompress developer commands. On a fresh machine:
#   make demo   -> set up, fetch the offline assets, run the default distillation recipe
#   make test   -> set up, run the test suite (CPU, offline, a few minutes)
#   make test-v5 -> the same suite against transformers 5 in .venv-v5 (where torchao int8 runs; no ONNX)
#   make test-llmc -> the GPTQ/AWQ/W8A8 tests in .venv-llmc (llmcompressor 0.14 needs transformers 5.15-5.17)
#   .ci/run runs make test, make test-v5, then make test-llmc
PYTHON ?= python3
VENV ?= .venv
VENV5 ?= .venv-v5
VENVL ?= .venv-llmc
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Tests and the demo never reach the Hub: offline mode and a private HF_HOME, so a warm cache hides nothing.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup-llama-tools test-assets compress-llm bench-compress-llm setup setup-v5 setup-llmc test-llmc bench-llm-compressed setup-llama-cpp bench-llm-llama-cpp assets assets-llm llm-demo bench-llm-chat demo test test-v5 test-slow lint docs bench bench-torchao bench-compress bench-pair clean

setup: $(VENV)/.installed

# torch first and alone: a range would pull a CUDA build of several GB (docs/install.md).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,onnx,bnb,plots,llm,lm-eval]"
	touch $@

# transformers 5 (constraints-v5.txt): Optimum ONNX Runtime needs transformers<4.58, torchao int8 needs 5.
setup-v5: $(VENV5)/.installed

$(VENV5)/.installed: pyproject.toml constraints-v5.txt
	$(PYTHON) -m venv $(VENV5)
	$(VENV5)/bin/python -m pip install -q --upgrade pip
	$(VENV5)/bin/python -m pip install -q torch==2.13.0
	$(VENV5)/bin/python -m pip install -q -c constraints-v5.txt -e ".[dev,bnb,torchao,plots,llm,lm-eval]"
	touch $@

# llmcompressor (GPTQ/AWQ/W8A8 -> compressed-tensors) pins transformers 5.15-5.17: an environment of its own
setup-llmc: $(VENVL)/.installed

$(VENVL)/.installed: pyproject.toml constraints-llmc.txt
	$(PYTHON) -m venv $(VENVL)
	$(VENVL)/bin/python -m pip install -q --upgrade pip
	$(VENVL)/bin/python -m pip install -q torch==2.13.0
	$(VENVL)/bin/python -m pip install -q -c constraints-llmc.txt -e ".[dev,gguf,llm,llmcompressor]"
	touch $@

# llama.cpp through llama-cpp-python, built from source (12-18 minutes on 2 cores), without the AMX/AVX512 paths
# in which quantized GGUFs crashed on these Xeon CPUs; optional (test_llama_cpp.py's slow test, the llama.cpp bench)
LLAMA_CPP_FLAGS ?= -DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX512=OFF
setup-llama-cpp: setup
	CMAKE_ARGS="$(LLAMA_CPP_FLAGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) install -q -c constraints.txt \
		--no-binary llama-cpp-python "llama-cpp-python==0.3.36" diskcache

# llama.cpp's own tools (convert_hf_to_gguf.py, llama-quantize, llama-imatrix, llama-perplexity) from the llama.cpp
# the same sdist vendors, into the cache (about 10 minutes on 2 cores); the GGUF tests run when they are there
setup-llama-tools: setup
	$(PIP) install -q -c constraints.txt sentencepiece  # the converter reads SentencePiece models (the gguf extra)
	$(PY) scripts/build_llama_cpp.py

# what the demo and the real-model tests need; all-mpnet-base-v2 (440 MB) is fetched by bench-pair
assets: setup
	$(PY) scripts/fetch_assets.py all-MiniLM-L6-v2 rotten_tomatoes_snippets

# the causal-LM assets: SmolLM2-135M-Instruct (GGUF -> safetensors), Jane Austen's novels (Debian) and their
# chat version, Hamlet
assets-llm: setup
	$(PY) scripts/fetch_assets.py SmolLM2-135M-Instruct austen_novels austen_chat hamlet

llm-demo: assets-llm
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 \
		--mixed_precision no --dynamo_backend no recipes/distill_llm.py --overwrite_output true

# the compress pipeline on a causal LM: SmolLM2-135M-Instruct on Austen, with the offline harness tasks
compress-llm: assets-llm
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(VENV)/bin/hfcompress compress \
		--config recipes/configs/smollm2/austen/compress_default.yaml

demo: assets
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 \
		--mixed_precision no --dynamo_backend no recipes/distill_bert.py --overwrite_output true

# real tokenizers and chat templates for the LM data tests (llama.cpp's, from the llama-cpp-python source
# archive; about 2.5 minutes the first time, reused after)
test-assets: setup
	$(PY) scripts/fetch_assets.py llama_cpp_vocab

test: setup test-assets
	$(OFFLINE) HF_HOME=$$(mktemp -d) $(PY) -m pytest -q

test-v5: setup-v5 test-assets
	$(OFFLINE) HF_HOME=$$(mktemp -d) $(VENV5)/bin/python -m pytest -q

test-llmc: setup-llmc
	$(OFFLINE) HF_HOME=$$(mktemp -d) $(VENVL)/bin/python -m pytest -q -m "llmcompressor and not slow"

test-slow: assets
	$(OFFLINE) HF_HOME=$$(mktemp -d) $(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check hfcompress recipes scripts tests

# the benchmark tables in docs/benchmarks.md, regenerated from the committed JSON under scripts/results/
docs: setup
	$(PY) scripts/render_benchmarks.py

bench: assets
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_distill.py --seeds 42,43,44
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_prune.py --teacher_dir scripts/results/work/teacher --num_train_epochs 1
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_quantize.py --teacher_dir scripts/results/work/teacher
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_qat.py --teacher_dir scripts/results/work/teacher
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_compress.py --teacher_dir scripts/results/work/teacher

# P1a/P1b through the compress pipeline (about an hour on 2 cores; fine-tunes its own teacher first)
bench-compress: assets
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_compress.py

bench-compress-llm: assets-llm
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_compress_llm.py

# the chat benchmark: sequence-level + token-level KD vs the LM loss on austen_chat, 3 seeds (~45 min)
bench-llm-chat: assets-llm
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_llm_chat.py --seeds 42,43,44

# P2: all-mpnet-base-v2 (two tokenizers) into MiniLM students, 3 seeds (fine-tunes MPNet first: ~35 min)
bench-pair: assets
	$(PY) scripts/fetch_assets.py all-mpnet-base-v2
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_distill_pair.py --seeds 42,43,44

# torchao int8 needs transformers 5, so its row comes from the .venv-v5 environment
bench-torchao: setup-v5 assets
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(VENV5)/bin/python scripts/bench_quantize.py --teacher_dir scripts/results/work/teacher --variants torchao-int8 --out scripts/results/quantization_torchao

# GPTQ/AWQ/W8A8 of SmolLM2-135M-Instruct and of the LM demo's student against their own fp32 (docs/benchmarks.md)
bench-llm-compressed: setup-llmc assets-llm
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(VENVL)/bin/python scripts/bench_llm_compressed.py

# GGUF variants run in llama.cpp itself: perplexity from its logits, tokens/s (docs/benchmarks.md)
bench-llm-llama-cpp: setup-llama-cpp assets-llm
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_llm_llama_cpp.py
	$(OFFLINE) HF_HOME=$${HF_HOME:-$(CURDIR)/.cache/hf} $(PY) scripts/bench_llm_llama_cpp.py --model outputs/distill_llm/student --name student

clean:
	rm -rf $(VENV) $(VENV5) $(VENVL) outputs .cache
