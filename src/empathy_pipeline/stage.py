"""Entry-point wrapper for DVC stage scripts: expected failures become one line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import PipelineError


def run(main: Callable[[], None], name: str | None = None) -> None:
    try:
        main()
    except PipelineError as exc:
        label = f"{name}: " if name else ""
        print(f"error: {label}{exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted; rerun the stage to resume", file=sys.stderr)
        raise SystemExit(130) from None
