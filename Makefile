# fluxqr — set-up is two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fluxqr-installed

# Flux (flux-core + flux-sched) is found on PATH or under FLUX_PREFIX (unset: /opt/flux, then
# ~/.local/flux); when it is missing, `make flux` builds it from the upstream release sources
# (FLUX_SOURCES: a directory holding the release tarballs; empty: download them) into
# FLUX_PREFIX, else /opt/flux when writable, else ~/.local/flux.
FLUX_PREFIX  ?=
FLUX_SOURCES ?=
export FLUX_PREFIX

.PHONY: setup demo test bench docs lint graphs clean flux have-flux

setup: $(STAMP)

# A venv made before links the bindings of the Flux just built (a separate line: `make -n`
# runs lines naming $(MAKE), and must change nothing).
flux:
	scripts/build-flux.sh $(if $(FLUX_PREFIX),--prefix "$(FLUX_PREFIX)") \
		$(if $(FLUX_SOURCES),--sources "$(FLUX_SOURCES)")
	if [ -f $(STAMP) ]; then $(PY) -m fluxqr.flux.env link; fi

# Build Flux only when no Flux with Fluxion is found.
have-flux:
	@scripts/build-flux.sh --check $(if $(FLUX_PREFIX),--prefix "$(FLUX_PREFIX)") \
		|| $(MAKE) --no-print-directory flux

# have-flux first (also under make -j): the venv links the bindings of the Flux found or built.
$(STAMP): pyproject.toml | have-flux
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	$(PY) -m fluxqr.flux.env link
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
