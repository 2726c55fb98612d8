"""What produced the numbers: the params profile and the versions of the packages that compute them.

`stages/environment.py` writes this to metrics/provenance.json on every `dvc repro` (the stage is
`always_changed`); every other stage depends on that file, so a changed package
version reruns the DAG and the commit that records new numbers also records why they changed.
An unchanged environment rewrites identical bytes and reruns nothing downstream.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

# The packages whose version can change a number in metrics/: models, kernels, tokenisation, scoring.
PACKAGES = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "gguf",
            "sentence-transformers", "vllm", "numpy", "polars", "nltk", "rouge-score", "pycocoevalcap",
            "bert-score", "datasketch", "better-profanity")


def versions() -> dict[str, str | None]:
    """Installed version of each package in PACKAGES (None when it is not installed, e.g. vllm on CPU)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(profile: str | None) -> dict:
    # Python by minor version and the machine architecture: float results can differ across CPU
    # kinds, never across patch releases of the interpreter.
    return {"profile": profile, "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "machine": platform.machine(), "packages": versions()}
