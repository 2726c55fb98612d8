"""The human A/B kit: export a blind sheet, fill its HTML page in a real headless chromium, tally it.

The browser is driven as a rater would use it: real mouse clicks on the radios and on Save
(DevTools protocol over aiohttp's websocket client), the download caught by the browser itself.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from empathy_pipeline.analysis import ab
from empathy_pipeline.core.errors import PipelineError

MODEL_A, MODEL_B = "alpha_model", "beta_model"   # names that occur in no reply text
# Text that breaks naive CSV/HTML handling: commas, quotes, newlines, markup, a script end tag, unicode.
TRICKY = ['she said "no", twice', "line one\nline two", "<b>bold</b> & </script><script>alert(1)</script>",
          "café — naïve 🙂", "  leading and trailing spaces  "]


def _predictions(path: Path, model: str, ids: list[int], *, context: bool = True) -> Path:
    voice = {MODEL_A: "oh no", MODEL_B: "I see"}.get(model, "hm")  # tells the models apart, not naming them
    rows = {"sample_id": [f"test:{i}" for i in ids], "model": [model] * len(ids),
            "prediction": [f"{voice} reply {i}: {TRICKY[i % len(TRICKY)]}" for i in ids],
            "reference": [f"reference {i}" for i in ids]}
    if context:
        rows["context"] = [[f"turn one of {i}" + ", with a comma" * (i % 3 == 0), f"turn two of {i}"][: 1 + i % 2] for i in ids]
    pl.DataFrame(rows).write_parquet(path)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two models' predictions overlapping on items 2..13 (each has items the other lacks)."""
    return (_predictions(tmp_path / f"{MODEL_A}.parquet", MODEL_A, list(range(0, 14))),
            _predictions(tmp_path / f"{MODEL_B}.parquet", MODEL_B, list(range(2, 16))))


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict], columns=ab.SHEET_COLUMNS) -> Path:
    path.write_text(ab.rows_to_csv([{c: r[c] for c in columns} for r in rows], columns), encoding="utf-8", newline="")
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "empathy_pipeline.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _filled(sheet: list[dict], choice) -> list[dict]:
    return [{**row, **{c: choice(i, j) for j, c in enumerate(ab.CRITERIA)}} for i, row in enumerate(sheet)]


# ---- a tiny DevTools client ---------------------------------------------------------------------


class Browser:
    """Headless chromium with one page, spoken to over the DevTools protocol (flat sessions)."""

    def __init__(self, binary: str, profile: Path, downloads: Path):
        self.binary, self.profile, self.downloads = binary, profile, downloads
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}

    async def __aenter__(self) -> Browser:
        import aiohttp

        # Port 0: chromium picks a free port and writes it to DevToolsActivePort in the profile.
        self.proc = subprocess.Popen(
            [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", "--window-size=1200,1400", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = aiohttp.ClientSession()
        try:
            port_file = self.profile / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and len(port_file.read_text().split()) == 2):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                await asyncio.sleep(0.1)
            port, path = port_file.read_text().split()
            self.ws = await self.http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
            self.reader = asyncio.create_task(self._read())
            await self.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(self.downloads))
            target = await self.send("Target.createTarget", url="about:blank")
            attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
            self.session = attached["sessionId"]
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        """Close the socket and end the chromium this client started (its own pid only)."""
        if hasattr(self, "reader"):
            self.reader.cancel()
        if hasattr(self, "ws"):
            await self.ws.close()
        await self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            future = self.pending.pop(data.get("id"), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def send(self, method: str, session: bool = False, **params) -> dict:
        msg_id = next(self.ids)
        self.pending[msg_id] = future = asyncio.get_running_loop().create_future()
        message = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        await self.ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def page(self, method: str, **params) -> dict:
        return await self.send(method, session=True, **params)

    async def js(self, expression: str):
        result = await self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open(self, url: str) -> None:
        await self.page("Page.navigate", url=url)
        for _ in range(300):
            if await self.js("document.readyState") == "complete":
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{url} did not load")

    async def click(self, selector: str) -> None:
        """A left click at the element's centre, as the mouse would do it (scrolled into view first)."""
        x, y = await self.js(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            await self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def screenshot(self, path: Path) -> None:
        shot = await self.page("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium not installed (make browser installs it)")
    return found


# ---- tests --------------------------------------------------------------------------------------


def test_export_fill_in_chromium_save_and_tally(pair: tuple[Path, Path], tmp_path: Path) -> None:
    binary = _chromium()
    a_file, b_file = pair
    out = tmp_path / "sheet"
    done = _cli("ab", "export", "--a", str(a_file), "--b", str(b_file), "--n", "7", "--seed", "11",
                "--out-dir", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sheet, key = _read(out / "sheet.csv"), _read(out / "key.csv")
    assert [r["item"] for r in sheet] == [r["item"] for r in key] == [str(i) for i in range(1, 8)]
    assert {r["model_a"] for r in key} == {MODEL_A} and {r["model_b"] for r in key} == {MODEL_B}
    html = (out / "sheet.html").read_text(encoding="utf-8")
    for secret in (MODEL_A, MODEL_B, "test:"):  # blind: neither model names nor sample ids reach the rater
        assert secret not in html and secret not in (out / "sheet.csv").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<link" not in html  # self-contained
    # Replies on the sheet are the models' own texts, in the order the key says.
    source = {m: dict(pl.read_parquet(f).select("sample_id", "prediction").iter_rows()) for m, f in
              ((MODEL_A, a_file), (MODEL_B, b_file))}
    for s, k in zip(sheet, key):
        first, second = (MODEL_A, MODEL_B) if k["reply_1"] == "A" else (MODEL_B, MODEL_A)
        assert (s["reply_1"], s["reply_2"]) == (source[first][k["sample_id"]], source[second][k["sample_id"]])

    # The rater's choices: a fixed pattern over the three verdicts, so every count is known.
    verdicts = ("1", "tie", "2")
    choice = lambda i, j: verdicts[(i + 2 * j) % 3]  # noqa: E731
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    async def rate() -> tuple[str, str, str]:
        async with Browser(binary, tmp_path / "profile", downloads) as browser:
            await browser.open((out / "sheet.html").as_uri())
            before = await browser.js("document.getElementById('progress').textContent")
            replies = await browser.js("[...document.querySelectorAll('.reply')].map(e => e.lastChild.textContent)")
            assert replies == [t for s in sheet for t in (s["reply_1"], s["reply_2"])]  # markup shown as text
            for i in range(len(sheet)):
                for j, c in enumerate(ab.CRITERIA):
                    await browser.click(f"#r-{i}-{c}-{choice(i, j)}")
                if i == 0:
                    middle = await browser.js("document.getElementById('progress').textContent")
            after = await browser.js("document.getElementById('progress').textContent")
            await browser.screenshot(tmp_path / "filled.png")
            await browser.click("#save")
            target = downloads / ab.FILLED_NAME
            for _ in range(200):
                if target.exists() and not list(downloads.glob("*.crdownload")):
                    break
                await asyncio.sleep(0.05)
            return before, middle, after

    before, middle, after = asyncio.run(rate())
    assert (before, middle, after) == ("0 of 7 done", "1 of 7 done", "7 of 7 done")
    assert (tmp_path / "filled.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = downloads / ab.FILLED_NAME
    assert saved.exists(), f"Save downloaded nothing: {list(downloads.iterdir())}"
    # Byte for byte what Python's CSV writer makes of the sheet with the rater's answers.
    assert saved.read_bytes() == ab.rows_to_csv(_filled(sheet, choice), ab.SHEET_COLUMNS).encode("utf-8")

    expected = {c: {"a": 0, "tie": 0, "b": 0} for c in ab.CRITERIA}
    for i, k in enumerate(key):
        for j, c in enumerate(ab.CRITERIA):
            v = choice(i, j)
            expected[c]["tie" if v == "tie" else "a" if (v == "1") == (k["reply_1"] == "A") else "b"] += 1
    done = _cli("ab", "tally", str(saved), str(out / "key.csv"), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["model_a"], result["model_b"], result["items"]) == (MODEL_A, MODEL_B, 7)
    got = {r["criterion"]: {"a": r["a_wins"], "tie": r["ties"], "b": r["b_wins"]} for r in result["criteria"]}
    assert got == expected
    assert all(r["n"] == 7 and r["skipped"] == 0 for r in result["criteria"])
    table = _cli("ab", "tally", str(saved), str(out / "key.csv"), cwd=tmp_path).stdout
    assert "| criterion | A wins | ties | B wins | N |" in table and f"A = {MODEL_A}, B = {MODEL_B}" in table
    e = expected["empathy"]
    assert f"| empathy | {e['a']} ({e['a'] / 7:.1%}) | {e['tie']} ({e['tie'] / 7:.1%}) | {e['b']} ({e['b'] / 7:.1%}) | 7 |" in table


def test_same_seed_same_sheet_and_both_orders(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a_file, b_file = pair
    files = ("sheet.csv", "sheet.html", "key.csv")
    first = ab.export(str(a_file), str(b_file), 10, 5, tmp_path / "one")
    again = ab.export(str(a_file), str(b_file), 10, 5, tmp_path / "two")
    other = ab.export(str(a_file), str(b_file), 10, 6, tmp_path / "three")
    assert first.n == 10 and first.note is None
    assert [(first.out_dir / f).read_bytes() for f in files] == [(again.out_dir / f).read_bytes() for f in files]
    assert (first.out_dir / "key.csv").read_bytes() != (other.out_dir / "key.csv").read_bytes()
    for result in (first, other):
        key = _read(result.out_dir / "key.csv")
        orders = [r["reply_1"] for r in key]
        assert sorted(set(orders)) == ["A", "B"] and orders.count("A") == 5  # both orders, balanced
        ids = [r["sample_id"] for r in key]
        assert len(set(ids)) == 10 and set(ids) <= {f"test:{i}" for i in range(2, 14)}  # only the overlap
    # Capped at the overlap, with a note rather than an error.
    capped = ab.export(str(a_file), str(b_file), 50, 5, tmp_path / "capped")
    assert capped.n == 12 and "12" in capped.note and len(_read(capped.out_dir / "key.csv")) == 12


def test_export_errors_and_context_lookup(tmp_path: Path) -> None:
    a = _predictions(tmp_path / "a.parquet", "a", [0, 1, 2])
    disjoint = _predictions(tmp_path / "d.parquet", "d", [7, 8])
    with pytest.raises(PipelineError, match="no sample_id in common"):
        ab.export(str(a), str(disjoint), 2, 0, tmp_path / "x")
    with pytest.raises(PipelineError, match=r"nosuch\.parquet: no predictions for model 'nosuch'"):
        ab.export("nosuch", str(a), 2, 0, tmp_path / "x", predictions_dir=tmp_path)
    # Predictions from before `evaluate` wrote the context: looked up in the test split, else a clear error.
    old_a = _predictions(tmp_path / "old_a.parquet", "old_a", [0, 1, 2], context=False)
    old_b = _predictions(tmp_path / "old_b.parquet", "old_b", [0, 1, 2], context=False)
    with pytest.raises(PipelineError, match="no 'context' column"):
        ab.export(str(old_a), str(old_b), 2, 0, tmp_path / "x", contexts=tmp_path / "missing.parquet")
    split = tmp_path / "test.parquet"
    pl.DataFrame({"sample_id": [f"test:{i}" for i in range(3)], "context": [["hello", "hi"], ["a"], ["b"]]}
                 ).write_parquet(split)
    ab.export("old_a", "old_b", 3, 0, tmp_path / "old", predictions_dir=tmp_path, contexts=split)
    contexts = {r["context"] for r in _read(tmp_path / "old" / "sheet.csv")}
    assert contexts == {"Speaker: hello\nListener: hi", "Speaker: a", "Speaker: b"}
    assert {r["model_a"] for r in _read(tmp_path / "old" / "key.csv")} == {"old_a"}


def test_malformed_and_incomplete_sheets_name_their_rows(pair: tuple[Path, Path], tmp_path: Path) -> None:
    result = ab.export(str(pair[0]), str(pair[1]), 6, 1, tmp_path / "s")
    key_path = result.out_dir / "key.csv"
    sheet = _read(result.out_dir / "sheet.csv")
    full = _filled(sheet, lambda i, j: ("1", "2", "TIE", "=", " tie ", "2")[i])  # case and '=' accepted

    def check(rows, pattern: str, **kw) -> None:
        with pytest.raises(PipelineError, match=pattern):
            ab.tally(_write(tmp_path / "bad.csv", rows), key_path, **kw)

    bad_value = [dict(r) for r in full]
    bad_value[2]["empathy"] = "3"
    check(bad_value, r"row 4 \(item 3\): empathy='3' is not 1, 2 or tie")
    unknown = [dict(r) for r in full]
    unknown[4]["item"] = "99"
    check(unknown, r"row 6 \(item 99\): item not in the key")
    check(full + [dict(full[1])], r"row 8 \(item 2\): item also in row 3")
    with pytest.raises(PipelineError, match="missing column.* continuity"):
        ab.tally(_write(tmp_path / "cols.csv", full, ab.SHEET_COLUMNS[:-1]), key_path)
    blank = [dict(r) for r in full]
    blank[0]["coherence"] = blank[3]["coherence"] = blank[3]["continuity"] = ""
    check(blank, r"blank cells in row 2 \(item 1\): coherence; row 5 \(item 4\): coherence, continuity")
    check(full[:5], r"item\(s\) of the key missing: 6")

    # --allow-incomplete: blank cells and absent items are skipped and reported, the rest counted.
    partial = ab.tally(_write(tmp_path / "partial.csv", blank[:5]), key_path, allow_incomplete=True)
    by = {t.criterion: t for t in partial.tallies}
    assert (by["coherence"].n, by["coherence"].skipped) == (3, 3)
    assert (by["empathy"].n, by["empathy"].skipped) == (5, 1) and partial.missing_items == 1
    assert "skipped (blank or missing): coherence 3, empathy 1" in partial.text()
    # Every verdict of the full sheet counted: items 3-5 are ties, 1 and 2 (and 6) go to A or B per the key.
    ok = {t.criterion: t for t in ab.tally(_write(tmp_path / "ok.csv", full), key_path).tallies}
    assert all((t.ties, t.n) == (3, 6) for t in ok.values())
    # The CLI prints the same as one line, no traceback.
    done = _cli("ab", "tally", str(tmp_path / "bad.csv"), str(key_path), cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


def test_format_tally_shape() -> None:
    tallies = [ab.count_verdicts("empathy", ["a", "a", "b", "tie", None]), ab.Tally("coherence", 0, 0, 0, 2)]
    text = ab.format_tally(tallies, "m1", "m2", title="T")
    assert text.splitlines()[:5] == ["T", "A = m1, B = m2", "", "| criterion | A wins | ties | B wins | N |",
                                     "|---|---:|---:|---:|---:|"]
    assert "| empathy | 2 (50.0%) | 1 (25.0%) | 1 (25.0%) | 4 |" in text and "| coherence | 0 (-) |" in text
    assert tallies[0].as_dict()["sign_test_p"] == 1.0 and tallies[1].sign_test_p is None
    assert ab.Tally("x", 9, 0, 0).sign_test_p == pytest.approx(2 / 2**9)
