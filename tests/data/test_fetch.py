"""`empathy data fetch`: real downloads over HTTP from a local server, sha256 checks, offline in one line.

The server is a real http.server on loopback serving the byte-exact copies in ../shared, so a
pass here means the pinned sha256 of each EPITOME / Efficient-Empathy file is right.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data import fetch as data_fetch
from empathy_pipeline.data.fetch import RELEASES, Download, Release, fetch, sha256_of

ROOT = Path(__file__).resolve().parents[2]
EMPATHY = str(Path(sys.executable).parent / "empathy")


def empathy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EMPATHY, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def serve(tmp_path):
    """serve(directory) -> its URL on a real loopback HTTP server (requests are counted)."""
    servers, hits = [], []

    def start(directory: Path) -> str:
        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                hits.append(self.path)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    start.hits = hits
    yield start
    for server in servers:
        server.shutdown()


def test_epitome_downloads_verifies_and_a_rerun_downloads_nothing(tmp_path, serve, epitome_dir):
    url = serve(epitome_dir)
    first = empathy("data", "fetch", "epitome", "--mirror", url, "--dest", str(tmp_path))
    assert first.returncode == 0, first.stderr
    target = tmp_path / "epitome"
    for download in RELEASES["epitome"].downloads:
        assert (target / download.name).read_bytes() == (epitome_dir / download.name).read_bytes()
    assert "3 file(s) downloaded and checked" in first.stdout and "epitome.source" in first.stdout
    served = len(serve.hits)
    again = empathy("data", "fetch", "epitome", "--mirror", url, "--dest", str(tmp_path))
    assert again.returncode == 0 and "already in place" in again.stdout
    assert len(serve.hits) == served  # nothing asked of the server


def test_the_papers_rated_sets_download_with_their_pinned_hashes(tmp_path, serve, paper_data_dir):
    target, fetched = fetch("efficient-empathy", tmp_path, mirror=serve(paper_data_dir))
    assert fetched == 2 and sha256_of(target / "test_results.json") == RELEASES["efficient-empathy"].downloads[0].sha256


def test_a_file_with_another_sha256_is_one_line_and_nothing_is_kept(tmp_path, serve, epitome_dir):
    tampered = tmp_path / "mirror"
    shutil.copytree(epitome_dir, tampered)
    with open(tampered / "interpretations-reddit.csv", "ab") as fh:
        fh.write(b"one extra line\n")
    result = empathy("data", "fetch", "epitome", "--mirror", serve(tampered), "--dest", str(tmp_path / "out"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "interpretations-reddit.csv: sha256" in lines[0] and "nothing kept" in lines[0]
    assert not (tmp_path / "out" / "epitome" / "interpretations-reddit.csv").exists()
    # the file before it was right, and stays: a rerun against a good copy fetches only the rest
    assert (tmp_path / "out" / "epitome" / "emotional-reactions-reddit.csv").exists()


@pytest.mark.parametrize("mirror, why", [
    ("http://release-host.invalid/", "this machine looks offline"),  # .invalid never resolves (RFC 2606)
    ("http://127.0.0.1:9/", "connection refused"),
])
def test_offline_is_one_line_that_says_where_to_put_the_files(tmp_path, mirror, why):
    result = empathy("data", "fetch", "ed", "--mirror", mirror, "--dest", str(tmp_path), "--timeout", "5")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download ") and why in lines[0]
    assert f"by hand into {tmp_path}/" in lines[0] and RELEASES["ed"].downloads[0].url in lines[0]


def test_the_ed_archive_unpacks_to_the_official_layout(tmp_path, serve, monkeypatch):
    """The ED code path on an archive of the demo CSVs (the official archive is not on this machine):
    its sha256 stands in for the pinned one, everything else is the real fetch."""
    release = tmp_path / "release" / "empatheticdialogues"
    release.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        shutil.copy(ROOT / "data/sample/empatheticdialogues" / f"{split}.csv", release / f"{split}.csv")
    archive = tmp_path / "release" / "empatheticdialogues.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname="empatheticdialogues")
    official = RELEASES["ed"]
    monkeypatch.setitem(data_fetch.RELEASES, "ed", Release(
        "ed", official.folder, (Download(official.downloads[0].url, sha256_of(archive)),), official.members,
        official.param, official.terms))
    target, fetched = fetch("ed", tmp_path / "out", mirror=serve(archive.parent))
    assert fetched == 1 and (target / "test.csv").read_bytes() == (release / "test.csv").read_bytes()
    assert fetch("ed", tmp_path / "out") == (target, 0)  # unpacked already: no network needed


def test_the_demo_archive_is_not_the_official_one(tmp_path, serve):
    """With the real pin, an archive of anything else is refused, not unpacked."""
    shutil.copytree(ROOT / "data/sample/empatheticdialogues", tmp_path / "r" / "empatheticdialogues")
    with tarfile.open(tmp_path / "r" / "empatheticdialogues.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "r" / "empatheticdialogues", arcname="empatheticdialogues")
    with pytest.raises(PipelineError, match="is not the release's 240c492c"):
        fetch("ed", tmp_path / "out", mirror=serve(tmp_path / "r"))
    assert not (tmp_path / "out" / "empatheticdialogues").exists()


def test_an_unknown_release_names_the_known_ones():
    result = empathy("data", "fetch", "edd")
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: unknown release 'edd'; one of: ed, epitome, efficient-empathy")
