"""Download the public releases the pipeline can run on, each file checked against a pinned sha256.

`empathy data fetch NAME` puts a release in DEST/<folder> (default data/external/, git-ignored):

- `ed`: the official EmpatheticDialogues archive (train/valid/test.csv in the official layout);
- `epitome`: EPITOME's Reddit portion (the three *-reddit.csv files), at the commit that
  ../shared/data/epitome/SOURCE.md names;
- `efficient-empathy`: the papers' preprocessed test/valid sets with the authors' ChatGPT ratings.

A file whose sha256 is not the pinned one is not kept (a moved release, a proxy's error page and a
truncated download all look like that). A release already in place with the right hashes is not
downloaded again. `mirror` replaces every URL's directory with another one holding the same file
names (an institute's copy, or a local server in the tests).
"""

from __future__ import annotations

import hashlib
import socket
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path


@dataclass(frozen=True)
class Download:
    url: str
    sha256: str

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Release:
    name: str
    folder: str
    downloads: tuple[Download, ...]
    # An archive's members to unpack (by file name, wherever they sit in it); empty = the downloads
    # are the files themselves.
    members: tuple[str, ...]
    param: str  # the params key that points at DEST/<folder>
    terms: str


_EPITOME = ("https://raw.githubusercontent.com/behavioral-data/Empathy-Mental-Health/"
            "0e11f98901527550885dbf253bd2af92dbcec43b/dataset/")
_EFFICIENT = ("https://raw.githubusercontent.com/Aurora-slz/Efficient-Empathy/"
              "daa363b4a197d1dab5d8027731e8c7c81c883388/data/")

RELEASES = {
    "ed": Release(
        "ed", "empatheticdialogues",
        # The archive's sha256 is the one ParlAI's own downloader checks
        # (parlai/tasks/empathetic_dialogues/build.py); ../shared's SOURCE.md has sha256s only for
        # its rebuilt CSVs, which differ from the official ones.
        (Download("https://dl.fbaipublicfiles.com/parlai/empatheticdialogues/empatheticdialogues.tar.gz",
                  "240c492cb6199a315722f716bfcc14f13ea6605f1cec67349153b606be92f6f2"),),
        ("train.csv", "valid.csv", "test.csv"), "prepare.source", "CC BY-NC 4.0: non-commercial research only"),
    "epitome": Release(
        "epitome", "epitome",
        (Download(_EPITOME + "emotional-reactions-reddit.csv",
                  "225b28ffdc257f8a997d557eb937e78b68235e6203c87c7e2203d00fef8545cc"),
         Download(_EPITOME + "interpretations-reddit.csv",
                  "2cedbe4252c919d22a6f46685afa16d3192a91e3306c2d4a386be12a30ad3f29"),
         Download(_EPITOME + "explorations-reddit.csv",
                  "9efa1af8e0537c16894379598f2076cb380ae18aacd9a8d26ebd381f5b7f9645")),
        (), "epitome.source", "non-commercial academic research only; cite Sharma et al., EMNLP 2020"),
    "efficient-empathy": Release(
        "efficient-empathy", "efficient-empathy",
        (Download(_EFFICIENT + "test_results.json", "45a34ac8623e7368c17b85c92805baf543b7ad309bd0faade9d516b634b3b094"),
         Download(_EFFICIENT + "val_results.json", "645522bafeea9ee85ced2f5252d10d5e67112059e8f0412e1e3504a91f55cbef")),
        (), "prepare.source (with prepare.format: paper_json)", "ED's CC BY-NC 4.0: non-commercial research only"),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _url(download: Download, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{download.name}" if mirror else download.url


def _why(exc: BaseException) -> str:
    """What went wrong, in words a user acts on: offline and refused are told apart from HTTP errors."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, socket.gaierror):
        return "the host name does not resolve: this machine looks offline"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    return str(reason)


def _download(url: str, want: str, target: Path, timeout: float, hint: str) -> None:
    """url -> target, hashed while it streams; a wrong sha256 leaves nothing behind."""
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as fh:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    fh.write(chunk)
            if digest.hexdigest() != want:
                raise PipelineError(f"{url}: sha256 {digest.hexdigest()} is not the release's {want} "
                                    f"(moved, truncated or not the release); nothing kept. {hint}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise PipelineError(f"cannot download {url} ({_why(exc)}). {hint}") from None


def _unpack(archive: Path, members: tuple[str, ...], target: Path, hint: str) -> None:
    try:
        with tarfile.open(archive) as tar, atomic_path(target) as tmp:
            tmp.mkdir()
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).name in members:
                    member.name = Path(member.name).name
                    tar.extract(member, tmp, filter="data")
            missing = [f for f in members if not (tmp / f).exists()]
            if missing:
                raise PipelineError(f"{archive}: the archive lacks {', '.join(missing)}. {hint}")
    except tarfile.TarError as exc:
        raise PipelineError(f"{archive}: not a valid tar.gz ({exc}). {hint}") from None


def _verified(path: Path, want: str) -> bool:
    return path.is_file() and sha256_of(path) == want


def fetch(name: str, dest: Path, timeout: float = 30.0, mirror: str | None = None) -> tuple[Path, int]:
    """Put release `name` in dest/<folder>; returns that folder and how many files were downloaded.

    A file already there with the pinned sha256 (an earlier run's, or put there by hand) is kept. An
    archive's unpacked members cannot be checked (no published hashes), so their presence suffices.
    """
    if name not in RELEASES:
        raise PipelineError(f"unknown release {name!r}; one of: {', '.join(RELEASES)}")
    release = RELEASES[name]
    target = dest / release.folder
    if release.members and all((target / f).is_file() for f in release.members):
        return target, 0
    # An archive is kept beside its unpacked folder, so a rerun after a failed unpack downloads nothing.
    saved_in = dest if release.members else target
    hint = (f"Download {' and '.join(d.url for d in release.downloads)} by hand into {saved_in}/ and rerun "
            f"(the sha256 is checked), or pass --mirror with a directory URL holding the same file names")
    fetched = 0
    for download in release.downloads:
        saved = saved_in / download.name
        if not _verified(saved, download.sha256):
            _download(_url(download, mirror), download.sha256, saved, timeout, hint)
            fetched += 1
    if release.members:
        _unpack(saved_in / release.downloads[0].name, release.members, target, hint)
    return target, fetched
