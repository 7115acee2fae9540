# One command each: `make test`, `make run`. Both create .venv and install pinned dependencies first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-all run reproduce-book lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c requirements.lock -e '.[convert,pipeline,dev]'
	# The book's own package, for side-by-side conformance tests and benchmarks. Its declared
	# dependencies would pull a second TensorFlow and downgrade numpy, hence --no-deps.
	$(PY) -m pip install --disable-pip-version-check -q --no-deps llms-from-scratch==1.0.19
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''

run: $(STAMP)
	$(VENV)/bin/snakemake --workflow-profile workflow/profiles/default

reproduce-book: $(STAMP)
	$(PY) -m gptlab.book --corpus ../shared/data/the-verdict.txt

bench: $(STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests workflow bench
	$(VENV)/bin/ruff format --check src tests workflow bench

format: $(STAMP)
	$(VENV)/bin/ruff format src tests workflow bench
	$(VENV)/bin/ruff check --fix src tests workflow bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
