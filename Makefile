# One command each: `make test`, `make run`, `make demo`. Each creates .venv and installs pinned
# dependencies first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# The tiny study (config/test.yaml) with synthetic GPT-2 releases, run in its own git-ignored folder
# so that it never mixes with the study in results/. CORPUS=path names a local copy of The Verdict
# (offline machines); without it, the text is downloaded.
DEMO := demo
CORPUS ?=
DEMO_SNAKEMAKE := $(VENV)/bin/snakemake --logger gptlab --directory $(DEMO) --snakefile Snakefile \
	--configfile config/test.yaml $(DEMO)/gpt2.yaml $(DEMO)/corpus.yaml

.PHONY: install test test-all run demo progress reproduce-book lint format bench gpu-check clean

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
	$(VENV)/bin/snakemake --logger gptlab --workflow-profile workflow/profiles/default

demo: $(DEMO)/gpt2.yaml
ifneq ($(strip $(CORPUS)),)
	@test -f '$(CORPUS)' || { echo "make demo: CORPUS=$(CORPUS) is not a file; name a copy of The Verdict" >&2; exit 1; }
	@echo '{corpus: {local_path: "$(abspath $(CORPUS))"}}' > $(DEMO)/corpus.yaml
else
	@echo '{corpus: {local_path: null}}' > $(DEMO)/corpus.yaml
endif
	@echo '$(DEMO_SNAKEMAKE)'; $(DEMO_SNAKEMAKE) || { test -s $(DEMO)/results/data/corpus.txt || echo \
	"make demo: The Verdict could not be downloaded (see $(DEMO)/results/logs/download_corpus.log). \
	Offline, name a local copy: make demo CORPUS=path/to/the-verdict.txt \
	(with snakemake itself: corpus.local_path in a config file)." >&2; exit 1; }
	$(DEMO_SNAKEMAKE) --report report.html
	@echo "Done: results in $(DEMO)/results/, Snakemake's report in $(DEMO)/report.html."

# Synthetic GPT-2 releases and the config overlay that points the pipeline at them.
$(DEMO)/gpt2.yaml: $(STAMP)
	$(PY) -m gptlab.testing mirror $(DEMO)/gpt2-mirror --config $@

# The last progress line (ETA, losses) of each job running in this checkout (results/ or demo/results/):
# its log under results/logs/ is open in a running process. To follow it: watch -n 5 make -s progress
progress: $(STAMP)
	@$(PY) -m gptlab.study.console

reproduce-book: $(STAMP)
	$(PY) -m gptlab.book --corpus ../shared/data/the-verdict.txt

bench: $(STAMP)
	$(PY) bench/run_all.py

# On a CUDA machine: conformance on the GPU and the speed ratios to the book in under 5 minutes
# (docs/speed.md, "On a GPU"); elsewhere it says there is no GPU and exits 0.
gpu-check: $(STAMP)
	bash bench/gpu_check.sh

# Style, complexity (ruff's C901, limit in pyproject.toml), Snakemake formatting, and the package's
# shape (no import cycle, imports from the core up: tests/test_architecture.py). CI runs it.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests workflow bench
	$(VENV)/bin/ruff format --check src tests workflow bench
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

format: $(STAMP)
	$(VENV)/bin/ruff format src tests workflow bench
	$(VENV)/bin/ruff check --fix src tests workflow bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
