"""Download and unpack the official EmpatheticDialogues release."""

from __future__ import annotations

import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import PipelineError
from .io import atomic_path

ED_FILES = ("train.csv", "valid.csv", "test.csv")


def fetch_ed(url: str, dest: Path, timeout: float = 30.0) -> Path:
    target = dest / "empatheticdialogues"
    if all((target / f).exists() for f in ED_FILES):
        return target
    hint = (f"download {url} by hand and unpack it so that {target}/train.csv, valid.csv and test.csv exist, "
            "or point prepare.source at any directory holding the three CSVs")
    archive = dest / "empatheticdialogues.tar.gz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(archive) as tmp:
            with open(tmp, "wb") as fh:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(f"cannot download ED ({reason}); {hint}") from None
    try:
        with tarfile.open(archive) as tar, atomic_path(target) as tmp:
            members = [m for m in tar.getmembers() if Path(m.name).name in ED_FILES and m.isfile()]
            tmp.mkdir()
            for member in members:
                member.name = Path(member.name).name
                tar.extract(member, tmp, filter="data")
            missing = [f for f in ED_FILES if not (tmp / f).exists()]
            if missing:
                raise PipelineError(f"{archive}: archive lacks {', '.join(missing)}; {hint}")
    except tarfile.TarError as exc:
        raise PipelineError(f"{archive}: not a valid tar.gz ({exc}); {hint}") from None
    return target
