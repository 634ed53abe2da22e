# fluxqr — set-up is two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fluxqr-installed

.PHONY: setup demo test bench docs lint graphs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	$(PY) -m fluxqr.fluxenv link
	touch $(STAMP)

demo: setup
	$(PY) -m fluxqr.demo --devices graphs/local-devices.yaml --job jobspec/examples/bell.yaml

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -ra

bench: setup
	$(PY) benchmarks/run.py

docs: setup
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

lint: setup
	$(PY) -m ruff check .

graphs: setup
	$(PY) graphs/regenerate.py

clean:
	rm -rf $(VENV) docs/_build build *.egg-info
