"""Atomic file output and small table/JSON helpers shared by every stage.

A DVC stage killed half-way must never leave a file that looks complete, so every writer
goes through a temporary sibling that is renamed into place only after it is closed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    Works for files and directories (a model directory is written whole, then swapped in).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_parquet(df: pl.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def read_parquet(path: str | os.PathLike, nonempty: bool = False) -> pl.DataFrame:
    """A parquet table; missing, unreadable or (with `nonempty`) row-less is a one-line error naming the file.

    `nonempty` is for a stage's main input: a table with a header and no rows would otherwise flow
    on as empty outputs and fail (or, worse, succeed) far downstream.
    """
    p = Path(path)
    if not p.exists():
        raise PipelineError(f"{p}: file not found")
    try:
        table = pl.read_parquet(p)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise PipelineError(f"{p}: cannot read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if nonempty and table.height == 0:
        raise PipelineError(f"{p}: no rows (a header only); rerun the stage that writes it or check its input")
    return table


def sample_rows(df: pl.DataFrame, size: int | None, seed: int) -> pl.DataFrame:
    """`size` rows drawn without replacement with `seed`, in file order (all rows when size is None or larger).

    The one sampling rule of the pipeline: generation seeds, rated samples, judged samples and
    training subsets all draw through here.
    """
    if size is None or size >= df.height:
        return df
    return df[np.sort(np.random.default_rng(seed).choice(df.height, size=int(size), replace=False))]


def read_json_list(path: str | os.PathLike, missing: str, expected: str) -> list:
    """A JSON file holding a list; a missing file, bad JSON or another shape is a one-line error."""
    p = Path(path)
    if not p.exists():
        raise PipelineError(f"{p}: {missing}")
    try:
        items = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(items, list):
        raise PipelineError(f"{p}: expected {expected}")
    return items


def read_predictions(path: str | os.PathLike) -> pl.DataFrame:
    """Read a predictions file (parquet, jsonl or csv) with `prediction` and `reference` columns."""
    p = Path(path)
    if not p.exists():
        raise PipelineError(f"{p}: file not found")
    if not p.is_file():
        raise PipelineError(f"{p}: not a file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            df = pl.read_ndjson(p) if p.stat().st_size else pl.DataFrame()
        elif suffix == ".csv":
            df = pl.read_csv(p) if p.stat().st_size else pl.DataFrame()
        else:
            raise PipelineError(f"{p}: unknown predictions format {suffix!r} (use .parquet, .jsonl or .csv)")
    except pl.exceptions.PolarsError as exc:
        raise PipelineError(f"{p}: cannot read ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("prediction", "reference") if c not in df.columns]
    if df.height and missing:
        raise PipelineError(f"{p}: missing column(s) {', '.join(missing)}")
    return df
