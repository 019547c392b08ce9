# Two entry points: `make demo` and `make test`. Both create .venv on first use and install
# from this repo's own requirement files (re-installed only when those files change).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-check test test-all notebooks notebooks-ci notebooks-sync lint clean

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m lw_lightning.demo

# the full demo as a test: teacher >= 60%, LookWhere at 10% of the patches within 5 points, recall >= 40%
demo-check: $(STAMP)
	$(PY) -m pytest -m demo -q -s tests/test_demo_full.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# executes the four notebooks top to bottom (each saves its figure into docs/figures/), then the
# rest of their tests: outputs stripped, in sync with the .py sources, the parameter branches
# (a demo dir, official weights, a bench results.json, a video checkpoint)
notebooks: $(STAMP)
	$(PY) -m lw_lightning.notebooks --figure-dir docs/figures
	$(PY) -m pytest -q tests/test_notebooks.py -k "not runs_top_to_bottom"

# what .ci/run runs: the four notebooks top to bottom, figures into a temporary folder (docs/figures untouched)
notebooks-ci: $(STAMP)
	$(PY) -m lw_lightning.notebooks

# rewrite notebooks/*.ipynb (no outputs) from their jupytext sources notebooks/*.py
notebooks-sync: $(STAMP)
	$(VENV)/bin/jupytext --to ipynb notebooks/*.py
# ruff (configured in pyproject.toml): lint rules, then the formatter in check mode
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf runs lightning_logs
