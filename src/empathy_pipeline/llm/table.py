"""An LLM over a table, in resumable shards: the loop behind every long stage.

generate, discriminate, rate, judge_quality and evaluate all do the same thing: cut a table of
rows into shards of `shard_size`, ask a model about each shard, and write each finished shard
atomically into a shard directory beside a fingerprint of everything that decides its content
(params, model, prompts, input rows). A rerun with the same fingerprint keeps the finished shards
and asks the model only for the rest, so a killed run resumes and its final output is
byte-identical to an uninterrupted run's; any other fingerprint starts fresh. The model is loaded
only when some shard is still to do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import write_json, write_parquet
from empathy_pipeline.core.progress import progress
from empathy_pipeline.core.provenance import versions
from empathy_pipeline.llm.base import SEEDING, Chat, ChatBackend, Sampling, request_seed

FINGERPRINT_FILE = "fingerprint.json"
REPLIES_SCHEMA = {"sample_id": pl.String, "reply": pl.String}


def log(line: str) -> None:
    print(line, flush=True)  # flushed: DVC and CI pipe stdout, and a progress line must not wait in a buffer


def fingerprint(settings: object, rows: pl.DataFrame | None = None, columns: Sequence[str] = ()) -> str:
    """sha256 of the settings (any JSON-able value) and of the given columns of every row."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    if rows is not None:
        for row in rows.select(list(columns)).iter_rows():
            digest.update(json.dumps(row, default=str).encode())
    return digest.hexdigest()


# ---- the shard store ------------------------------------------------------------------------------

def shard_path(shard_dir: Path, index: int) -> Path:
    return shard_dir / f"shard-{index:05d}.parquet"


def prepare_shard_dir(shard_dir: Path, fp: str, what: str) -> None:
    """Keep the shards only if they were made with this fingerprint; otherwise start fresh."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    for leftover in shard_dir.glob(".shard-*"):  # temp dirs of a shard whose writer was killed
        shutil.rmtree(leftover, ignore_errors=True)
    marker = shard_dir / FINGERPRINT_FILE
    try:
        old = json.loads(marker.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        old = None  # no marker, or an unreadable one: nothing here can be trusted
    if old != fp:
        stale = sorted(shard_dir.glob("shard-*.parquet"))
        if stale:
            log(f"{what}: {shard_dir} holds {len(stale)} shard(s) made with other settings or inputs; starting fresh")
        for path in stale:
            path.unlink()
        write_json(marker, {"fingerprint": fp})


def read_shard(path: Path, schema: dict, id_column: str, expected_ids: list[str]) -> pl.DataFrame | None:
    """A finished shard, or None when missing, unreadable, or not holding the expected rows in order."""
    if not path.exists():
        return None
    try:
        shard = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError):
        return None
    if list(shard.columns) != list(schema) or shard[id_column].unique(maintain_order=True).to_list() != expected_ids:
        return None
    return shard


# ---- the loop -------------------------------------------------------------------------------------

def run_sharded(
    rows: pl.DataFrame,
    work: Callable[[pl.DataFrame, int], pl.DataFrame],
    *,
    shard_dir: str | Path,
    shard_size: int,
    fingerprint: str,
    schema: dict,
    what: str,
    id_column: str = "sample_id",
    show_progress: bool = True,
) -> tuple[pl.DataFrame, dict]:
    """`work(part, shard_index)` on every `shard_size` slice of `rows`, resumably; (results, counts).

    Each shard's result must hold the part's ids (`id_column`) in the part's order (a row may
    repeat, e.g. several completions per seed) with exactly `schema`'s columns.
    """
    if shard_size < 1:
        raise PipelineError(f"{what}: shard_size must be >= 1, got {shard_size}")
    shard_dir = Path(shard_dir)
    # The package versions decide replies as much as the params do: after a lock bump, shards
    # made by the old environment are not resumed (metrics/provenance.json names the new one).
    run_key = json.dumps({"work": fingerprint, "environment": versions()}, sort_keys=True)
    prepare_shard_dir(shard_dir, hashlib.sha256(run_key.encode()).hexdigest(), what)
    n_shards = (rows.height + shard_size - 1) // shard_size
    results: list[pl.DataFrame] = []
    resumed = 0
    for index in progress(range(n_shards), desc=f"{what} shards", total=n_shards, enabled=show_progress):
        part = rows.slice(index * shard_size, shard_size)
        ids = part[id_column].to_list()
        path = shard_path(shard_dir, index)
        shard = read_shard(path, schema, id_column, ids)
        if shard is not None:
            resumed += 1
            results.append(shard)
            continue
        if path.exists():
            log(f"{what}: {path} is unreadable or holds other rows; doing it again")
        if resumed and resumed == index:
            log(f"{what}: resuming after {resumed}/{n_shards} finished shards")
        started = time.time()
        shard = work(part, index)
        if list(shard.columns) != list(schema) or shard[id_column].unique(maintain_order=True).to_list() != ids:
            raise PipelineError(f"{what}: shard {index} does not hold its rows in order (a bug in the stage)")
        shard = shard.cast(schema)
        write_parquet(shard, path)
        results.append(shard)
        log(f"{what}: shard {index + 1}/{n_shards} written ({part.height} rows, {time.time() - started:.0f} s)")
    if n_shards and resumed == n_shards:
        log(f"{what}: all {n_shards} shards already done")
    table = pl.concat(results) if results else pl.DataFrame(schema=schema)
    return table, {"shards": n_shards, "shards_resumed": resumed}


def respond(
    samples: pl.DataFrame,
    chat: Callable[[list[str]], Chat],
    backend: ChatBackend,
    sampling: Sampling,
    *,
    shard_dir: str | Path,
    shard_size: int,
    settings: dict,
    what: str,
    show_progress: bool = True,
) -> tuple[pl.DataFrame, dict]:
    """One model reply per sample context (sample_id, reply), resumably: discriminate and evaluate.

    `chat(context)` builds the prompt; `settings` is whatever else decides the replies (model,
    backend params): with the sampling and the prompt of the first sample it is the fingerprint.
    Empty replies are kept and counted (`empty_replies`).
    """
    example = chat(["{context}"])
    fp = fingerprint({"settings": settings, "sampling": sampling, "prompt": example,
                      **(SEEDING if sampling.temperature > 0 else {})}, samples, ("sample_id", "context"))

    def work(part: pl.DataFrame, index: int) -> pl.DataFrame:
        # Each reply is seeded by its sample_id: shard_size and batch_size do not change what is drawn.
        seeds = [request_seed(sampling.seed, sample_id) for sample_id in part["sample_id"].to_list()]
        replies = backend.generate([chat(c) for c in part["context"].to_list()], sampling, seeds)
        return pl.DataFrame({"sample_id": part["sample_id"], "reply": replies}, schema=REPLIES_SCHEMA)

    table, counts = run_sharded(samples, work, shard_dir=shard_dir, shard_size=shard_size, fingerprint=fp,
                                schema=REPLIES_SCHEMA, what=what, show_progress=show_progress)
    counts["empty_replies"] = int((table["reply"].str.strip_chars() == "").sum()) if table.height else 0
    return table, counts
