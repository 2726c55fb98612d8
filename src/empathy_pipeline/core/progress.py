"""Progress bars (tqdm) that stay quiet in CI logs unless asked for."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(it: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterable[T]:
    # mininterval keeps DVC logs readable: one line every few seconds, not per item.
    return tqdm(it, desc=desc, total=total, disable=not enabled, mininterval=5.0, dynamic_ncols=True)
