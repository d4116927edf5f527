# Tansuo — the two commands the README promises: `make demo` and `make test`.
# Both create .venv when missing (idempotent) and install pinned dependencies.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test venv lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, pinned: the CPU build on local disk (an unpinned torch pulls CUDA wheels).
# obp ships the Open Bandit Dataset sample; it declares python<3.11 and heavy deps,
# so it is installed without them (we only read its data files).
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,dp]'
	$(PIP) install --quiet --no-deps --ignore-requires-python obp==0.5.7
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/tansuo demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_import.py

clean:
	rm -rf $(VENV) tansuo-data .pytest_cache
