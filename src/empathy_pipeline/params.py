"""params.yaml access: every stage reads its own section, nothing else reads the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import PipelineError

PARAMS_FILE = Path("params.yaml")


def load(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise PipelineError(f"{p}: params file not found (run from the project root)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PipelineError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    return data


def section(name: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    data = load(path)
    if name not in data:
        raise PipelineError(f"{path}: no '{name}' section")
    return data[name]
