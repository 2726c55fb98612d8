"""The shard store behind the long stages (generate, rate): resume after a kill, never reuse stale work.

A shard directory holds `shard-NNNNN.parquet` files, each written atomically once complete, and a
fingerprint of everything that decides their content (params, model, prompts, input rows). A rerun
with the same fingerprint keeps the finished shards; any other fingerprint starts fresh.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from .io import write_json

FINGERPRINT_FILE = "fingerprint.json"


def shard_path(shard_dir: Path, index: int) -> Path:
    return shard_dir / f"shard-{index:05d}.parquet"


def prepare_shard_dir(shard_dir: Path, fingerprint: str, log: Callable[[str], None], what: str) -> None:
    """Keep the shards only if they were made with this fingerprint; otherwise start fresh."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    for leftover in shard_dir.glob(".shard-*"):  # temp dirs of a shard whose writer was killed
        shutil.rmtree(leftover, ignore_errors=True)
    marker = shard_dir / FINGERPRINT_FILE
    try:
        old = json.loads(marker.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        old = None  # no marker, or an unreadable one: nothing here can be trusted
    if old != fingerprint:
        stale = sorted(shard_dir.glob("shard-*.parquet"))
        if stale:
            log(f"{what}: {shard_dir} holds {len(stale)} shard(s) made with other settings or inputs; starting fresh")
        for path in stale:
            path.unlink()
        write_json(marker, {"fingerprint": fingerprint})


def read_shard(path: Path, columns: list[str], id_column: str, expected_ids: list[str]) -> pl.DataFrame | None:
    """A finished shard, or None when missing, unreadable, or not holding exactly the expected rows."""
    if not path.exists():
        return None
    try:
        shard = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError):
        return None
    if list(shard.columns) != columns or shard[id_column].to_list() != expected_ids:
        return None
    return shard
