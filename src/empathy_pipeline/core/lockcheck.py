"""Is the committed dvc.lock the one `dvc repro` would write for the committed code and params?

Runs `dvc status --json` (no stage is executed; about a second) and keeps only the changes that a
fresh clone can see and that mean the lock, and so the committed metrics, came from other code:

- a dependency that is a file (or a directory of files) tracked by git — the stage scripts, the
  library modules, configs, the committed sample data — reported `modified`, `deleted` or `new`;
- a params entry reported `modified`, `new` or `deleted` (dvc reports params under the params
  file's path as a dict key → status; a section such as `train` is narrowed here to the leaf keys
  that differ between dvc.lock and the params file, e.g. `params.yaml:train.max_steps`);
- `changed command` (or `changed checksum` for a single-stage .dvc file);
- a stage of dvc.yaml (or a foreach item such as `evaluate@base`) with no entry in dvc.lock.

Not staleness: a data dependency reported `deleted` and outputs reported `not in cache`/`deleted`,
which is what a fresh clone without the DVC cache looks like, and a data dependency reported
`modified` (its producer's own staleness is what gets reported). Stages that DVC marks
`always changed` — `always_changed: true` in dvc.yaml, or a callback stage with neither deps nor
outs — rerun on every `dvc repro` by design and are skipped: dvc puts the literal string
"always changed" in their status list.

    python -m empathy_pipeline.core.lockcheck      # exit 0, or 1 with one line per stale stage on stderr
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from empathy_pipeline.core.errors import PipelineError

OK_MESSAGE = "dvc.lock matches the code and params of every stage"
RULE = (
    "rule: a commit that changes a stage's code or params commits the dvc.lock and metrics "
    "that `dvc repro` made from it"
)
ALWAYS_CHANGED = "always changed"
STAGE_CHANGED = ("changed command", "changed checksum")
DVC_TIMEOUT_S = 600


class DepChange(NamedTuple):
    """One changed dependency: a path (`stages/train.py`) or a param (`params.yaml:train.lr`)."""

    dep: str
    status: str  # modified | deleted | new

    def __str__(self) -> str:
        return f"{self.dep} {self.status}"


@dataclass(frozen=True)
class StaleStage:
    name: str  # as dvc addresses it: `train_synth`, `evaluate@base`, `sub/dvc.yaml:stage`
    deps: tuple[DepChange, ...] = ()
    command: str = ""  # pasteable: `dvc repro evaluate@base`
    cmd_changed: bool = False
    not_in_lock: bool = False

    @property
    def changes(self) -> list[str]:
        out = ["no entry in dvc.lock (never reproduced)"] if self.not_in_lock else []
        out += [str(d) for d in self.deps]
        if self.cmd_changed:
            out.append("command changed")
        return out


# ---- running dvc and git ---------------------------------------------------------------------


def dvc_command() -> list[str]:
    """The dvc next to this interpreter (the venv's), else the one on PATH, else `python -m dvc`."""
    bindir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    for name in ("dvc", "dvc.exe"):
        if (bindir / name).is_file():
            return [str(bindir / name)]
    found = shutil.which("dvc")
    if found:
        return [found]
    if importlib.util.find_spec("dvc") is not None:
        return [sys.executable, "-m", "dvc"]
    raise PipelineError(f"dvc not found next to {sys.executable} nor on PATH (pip install dvc)")


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors[0] if errors else lines[-1] if lines else "no output").replace("\n", " ")


def _run(argv: list[str], cwd: Path, what: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=DVC_TIMEOUT_S, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise PipelineError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise PipelineError(f"{what}: no answer after {DVC_TIMEOUT_S} s in {cwd}") from exc
    if proc.returncode != 0:
        raise PipelineError(
            f"{what} failed in {cwd} (exit {proc.returncode}): {_last_error_line(proc.stderr or proc.stdout)}"
        )
    return proc.stdout


def run_dvc(repo: Path, *args: str) -> str:
    """stdout of `dvc ARGS` in repo; a failure is a one-line PipelineError."""
    return _run([*dvc_command(), *args], repo, f"dvc {' '.join(args)}")


def dvc_status(repo: Path) -> dict[str, list]:
    """`dvc status --json` in repo, parsed: {stage: [{"changed deps": {...}}, "changed command", ...]}."""
    out = _run([*dvc_command(), "status", "--json"], repo, "dvc status --json")
    text = out.strip()
    if not text:  # dvc prints `{}` when everything is up to date; be lenient with nothing at all
        return {}
    try:
        status = json.loads(text)
    except json.JSONDecodeError as exc:
        first = text.splitlines()[0][:120]
        raise PipelineError(f"dvc status --json printed something that is not JSON: {first!r}") from exc
    if not isinstance(status, dict) or not all(isinstance(v, list) for v in status.values()):
        raise PipelineError(f"dvc status --json: expected {{stage: [changes]}}, got {text[:120]!r}")
    return status


def _git_tracked(repo: Path) -> tuple[set[str], set[str]]:
    """Absolute paths of the files git tracks in repo's work tree, and of their parent directories."""
    top = _run(["git", "rev-parse", "--show-toplevel"], repo, "git rev-parse").strip()
    listing = _run(["git", "ls-files", "-z", "--full-name"], Path(top), "git ls-files")
    files, dirs = set(), set()
    for rel in filter(None, listing.split("\0")):
        path = os.path.normpath(os.path.join(top, rel))
        files.add(path)
        parent = os.path.dirname(path)
        while len(parent) > len(top) and parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return files, dirs


# ---- dvc.lock and params files ---------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        from ruamel.yaml import YAML  # what dvc itself parses with (YAML 1.2)

        return YAML(typ="safe").load(text)
    except ImportError:
        import yaml

        return yaml.safe_load(text)


def _load_params_file(path: Path) -> Any:
    """The params file as data, or None when it cannot be read (then the declared key is reported)."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(path.read_text(encoding="utf-8"))
        if suffix == ".py":
            return None
        return _load_yaml(path)
    except Exception:  # noqa: BLE001 - only a refinement of the message; dvc already read the file
        return None


def _split_address(name: str) -> tuple[str, str]:
    """`sub/dvc.yaml:train` → ("sub/dvc.yaml", "train"); `evaluate@base` → ("dvc.yaml", "evaluate@base")."""
    left, sep, right = name.rpartition(":")
    if sep and (left.endswith("dvc.yaml") or left.endswith("dvc.yml")):
        return left, right
    return "dvc.yaml", name


class _Locks:
    """The `stages` mapping of each dvc.lock, read once."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._cache: dict[Path, dict] = {}

    def entry(self, dvcfile: str, stage: str) -> dict | None:
        lock = (self.repo / dvcfile).parent / "dvc.lock"
        if lock not in self._cache:
            stages: dict = {}
            if lock.is_file():
                try:
                    data = _load_yaml(lock) or {}
                except Exception as exc:  # noqa: BLE001
                    raise PipelineError(f"{lock}: cannot read it: {exc}".splitlines()[0]) from exc
                if isinstance(data, dict) and isinstance(data.get("stages"), dict):
                    stages = data["stages"]
            self._cache[lock] = stages
        entry = self._cache[lock].get(stage)
        return entry if isinstance(entry, dict) else None


def _lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    """data["a"]["b"] for "a.b" (a literal dotted key wins, as in dvc.lock's flattened keys)."""
    if isinstance(data, dict) and dotted in data:
        return True, data[dotted]
    head, dot, rest = dotted.partition(".")
    if dot and isinstance(data, dict) and head in data:
        return _lookup(data[head], rest)
    return False, None


def _leaf_diff(old: Any, new: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:
            sub = f"{prefix}.{key}"
            if key not in old:
                yield sub, "new"
            elif key not in new:
                yield sub, "deleted"
            else:
                yield from _leaf_diff(old[key], new[key], sub)
    elif old != new and not (
        isinstance(old, list | tuple) and isinstance(new, list | tuple) and list(old) == list(new)
    ):
        yield prefix, "modified"


def _param_changes(
    repo: Path, params_path: str, keys: dict[str, str], lock_entry: dict | None, dvcfile: str
) -> list[DepChange]:
    """params.yaml:{key} changes; a modified section is narrowed to the leaves that differ."""
    recorded: dict = {}
    if lock_entry and isinstance(lock_entry.get("params"), dict):
        rel = os.path.relpath(repo / params_path, (repo / dvcfile).parent)
        recorded = lock_entry["params"].get(rel) or lock_entry["params"].get(params_path) or {}
    actual = None
    out: list[DepChange] = []
    for key, st in keys.items():
        leaves: list[tuple[str, str]] = []
        if st == "modified" and isinstance(recorded, dict) and isinstance(recorded.get(key), dict):
            if actual is None:
                actual = _load_params_file(repo / params_path)
            found, now = _lookup(actual, key)
            if found and isinstance(now, dict):
                leaves = list(_leaf_diff(recorded[key], now, key))
        out += [DepChange(f"{params_path}:{k}", s) for k, s in (leaves or [(key, str(st))])]
    return out


# ---- the check -------------------------------------------------------------------------------


def stale_stages(repo: Path = Path(".")) -> list[StaleStage]:
    """Every stage whose dvc.lock entry does not match the code, params or command in the work tree."""
    repo = Path(os.path.realpath(repo))
    if not repo.is_dir():
        raise PipelineError(f"{repo}: no such directory")
    status = dvc_status(repo)
    if not status:
        return []
    tracked_files, tracked_dirs = _git_tracked(repo)
    locks = _Locks(repo)
    stale: list[StaleStage] = []
    for name, entries in status.items():
        if ALWAYS_CHANGED in entries:
            continue
        dvcfile, stage = _split_address(name)
        is_pipeline_stage = not name.endswith(".dvc")
        lock_entry = locks.entry(dvcfile, stage) if is_pipeline_stage else None
        if is_pipeline_stage and lock_entry is None:
            stale.append(StaleStage(name=name, command=_repro(name), not_in_lock=True))
            continue
        deps: list[DepChange] = []
        cmd_changed = False
        for entry in entries:
            if isinstance(entry, str):
                cmd_changed |= entry in STAGE_CHANGED
                continue
            if not isinstance(entry, dict):
                raise PipelineError(f"dvc status --json: unexpected entry for {name}: {entry!r}"[:200])
            for path, st in (entry.get("changed deps") or {}).items():
                if isinstance(st, dict):  # a params file: {key: modified | new | deleted}
                    deps += _param_changes(repo, path, st, lock_entry, dvcfile)
                    continue
                full = os.path.normpath(os.path.join(repo, path))
                if full in tracked_files or full in tracked_dirs:
                    deps.append(DepChange(path, str(st)))
        if deps or cmd_changed:
            stale.append(
                StaleStage(name=name, deps=tuple(deps), command=_repro(name), cmd_changed=cmd_changed)
            )
    return stale


def _repro(*names: str) -> str:
    return " ".join(["dvc", "repro", *(shlex.quote(n) for n in names)])


def format_report(stale: Sequence[StaleStage]) -> str:
    if not stale:
        return OK_MESSAGE
    lines = [f"dvc.lock is stale for {s.name}: {', '.join(s.changes)} — run: {s.command}" for s in stale]
    if len(stale) > 1:
        lines.append("to refresh them all, with the stages downstream of them: dvc repro")
    lines.append(RULE)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m empathy_pipeline.core.lockcheck",
        description="Fail when the committed dvc.lock does not match the stages' code, params or command.",
    )
    parser.add_argument(
        "repo", nargs="?", type=Path, default=Path("."), help="the DVC repository (default: .)"
    )
    args = parser.parse_args(argv)
    try:
        stale = stale_stages(args.repo)
    except PipelineError as exc:
        print(f"lockcheck: {exc}", file=sys.stderr)
        return 2
    if stale:
        print(format_report(stale), file=sys.stderr)
        return 1
    print(OK_MESSAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
