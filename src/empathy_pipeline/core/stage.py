"""The shape every DVC stage script shares: paths on the command line, typed params, one-line errors.

dvc.yaml is the one place that names a stage's files: its `cmd` passes each of them as an
option (`--train data/prepared/train.parquet --out data/synth/generated.parquet`), and the
script declares them as parameters annotated `In` (a dependency) or `Out` (an output).
tests/stages/test_dvc_contract.py checks that every `In` option is among the stage's deps and every
`Out` option among its outs, metrics or plots, and that the deps list every module the script
imports. typer turns the signature into the command line.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from empathy_pipeline.core.errors import PipelineError

In = Annotated[Path, typer.Option(help="input file or directory (a dep in dvc.yaml)")]
Out = Annotated[Path, typer.Option(help="output file or directory (an out, metric or plot in dvc.yaml)")]
Ins = Annotated[list[Path], typer.Option(help="input files (each a dep in dvc.yaml)")]
Text = Annotated[str, typer.Option(help="a name (a params section, a model)")]


TIMES_LOG = Path("logs/stage_times.jsonl")


def _log_time(label: str, seconds: float) -> None:
    """Wall times go to a log DVC does not track, never into metrics/: a metric changes only when a
    result does (benchmarks/ read this log)."""
    try:
        TIMES_LOG.parent.mkdir(parents=True, exist_ok=True)
        with TIMES_LOG.open("a") as fh:
            fh.write(json.dumps({"stage": label, "args": sys.argv[1:], "seconds": round(seconds, 2),
                                 "ended": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
    except OSError:
        pass  # a read-only checkout still runs its stages


def run(main: Callable[..., None], name: str | None = None) -> None:
    """Parse the command line into `main`'s parameters and run it; expected failures are one line."""
    label = name or Path(sys.argv[0]).stem

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        started = time.time()
        try:
            main(*args, **kwargs)
            _log_time(label, time.time() - started)
        except PipelineError as exc:
            print(f"error: {label}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print(f"{label}: interrupted; rerun the stage to resume", file=sys.stderr)
            raise SystemExit(130) from None

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                      help=main.__doc__)
    app.command()(guarded)
    try:
        app(standalone_mode=False)
    except typer.TyperException as exc:  # a command line that does not match the script: one line too
        print(f"error: {label}: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(2) from None
