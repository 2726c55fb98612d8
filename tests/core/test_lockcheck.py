"""lockcheck against a real scratch git + DVC repository: real `dvc repro`, real `dvc status`, no mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from empathy_pipeline.core import lockcheck
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.lockcheck import DepChange, format_report, main, stale_stages

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
GIT_ID = [
    "-c",
    "user.email=lockcheck@example.invalid",
    "-c",
    "user.name=lockcheck",
    "-c",
    "commit.gpgsign=false",
]

PARAMS = """\
train:
  steps: 3
  lr: 0.1
greet: hi
"""

MAKE_PY = """\
import yaml

steps = yaml.safe_load(open("params.yaml"))["train"]["steps"]
open("out.txt", "w").write(f"{steps}\\n")
"""

EACH_PY = """\
import sys

item = sys.argv[1]
open(f"each_{item}.txt", "w").write(item + open("out.txt").read())
"""

# make: a script with a code dep and one param; down: only a data dep (make's output);
# each: a foreach over a script that tracks the whole `train` section; env: always_changed,
# with a code dep, like the environment-recording stage.
DVC_YAML = """\
stages:
  make:
    cmd: python src/make.py
    deps: [src/make.py]
    params: [train.steps]
    outs: [out.txt]
  down:
    cmd: python -c "open('down.txt', 'w').write(open('out.txt').read() * 2)"
    deps: [out.txt]
    outs: [down.txt]
  each:
    foreach: [a, b]
    do:
      cmd: python src/each.py ${item}
      deps: [src/each.py, out.txt]
      params: [train]
      outs: ["each_${item}.txt"]
  env:
    cmd: python -c "import sys; open('env.txt', 'w').write(sys.version)"
    always_changed: true
    deps: [src/make.py]
    outs: [env.txt]
"""

OUTS = ["out.txt", "down.txt", "each_a.txt", "each_b.txt", "env.txt"]


def run(cwd: Path, *argv: str) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def dvc(repo: Path, *args: str) -> str:
    return run(repo, str(BIN / "dvc"), *args)


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", *GIT_ID, "commit", "-q", "--allow-empty", "-m", message)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def names(repo: Path) -> list[str]:
    return [s.name for s in stale_stages(repo)]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The scratch pipeline, reproduced and committed once; each test works on a copy."""
    repo = tmp_path_factory.mktemp("lockcheck") / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "params.yaml").write_text(PARAMS)
    (repo / "src" / "make.py").write_text(MAKE_PY)
    (repo / "src" / "each.py").write_text(EACH_PY)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    dvc(repo, "repro", "-q")
    commit(repo, "pipeline and its dvc.lock")
    return repo


@pytest.fixture
def repo(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def test_fresh_lock_passes(repo: Path, capsys) -> None:
    # the always_changed stage is in dvc's status, and is not staleness
    assert lockcheck.dvc_status(repo) == {"env": ["always changed"]}
    assert main([str(repo)]) == 0
    assert capsys.readouterr().out.strip() == "dvc.lock matches the code and params of every stage"


def test_code_edit_without_repro_names_that_stage_only(repo: Path, capsys) -> None:
    # the stage run by hand (its output changes) and committed without `dvc repro`
    edit(repo / "src" / "make.py", 'f"{steps}\\n"', 'f"{steps * 10}\\n"')
    run(repo, "python", "src/make.py")
    commit(repo, "make: new output, stale lock")

    status = lockcheck.dvc_status(repo)
    assert status["down"] == [{"changed deps": {"out.txt": "modified"}}]  # a data dep: not named
    assert {"changed deps": {"src/make.py": "modified"}} in status["env"]  # always changed: not named

    stale = stale_stages(repo)
    assert [s.name for s in stale] == ["make"]
    assert stale[0].deps == (DepChange("src/make.py", "modified"),)
    assert stale[0].command == "dvc repro make"

    assert main([str(repo)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "dvc.lock is stale for make: src/make.py modified — run: dvc repro make"
    assert err[-1].startswith("rule: a commit that changes a stage's code or params commits the dvc.lock")
    assert len(err) == 2


def test_deleted_code_file_is_stale(repo: Path) -> None:
    (repo / "src" / "each.py").unlink()
    stale = stale_stages(repo)
    assert [s.name for s in stale] == ["each@a", "each@b"]
    assert stale[0].deps == (DepChange("src/each.py", "deleted"),)


def test_param_edit_is_named_with_its_key_and_the_command_pastes(repo: Path) -> None:
    edit(repo / "params.yaml", "lr: 0.1", "lr: 0.2")  # in `each`'s tracked section only
    commit(repo, "lr 0.2, stale lock")
    stale = stale_stages(repo)
    assert [s.name for s in stale] == ["each@a", "each@b"]
    # dvc reports the whole section {"params.yaml": {"train": "modified"}}; the leaf is named
    assert stale[0].deps == (DepChange("params.yaml:train.lr", "modified"),)
    assert stale[0].command == "dvc repro each@a"
    assert format_report(stale).splitlines()[0] == (
        "dvc.lock is stale for each@a: params.yaml:train.lr modified — run: dvc repro each@a"
    )

    # the suggested command, pasted into a shell, refreshes exactly that foreach item
    subprocess.run(stale[0].command, shell=True, cwd=repo, env=ENV, check=True, capture_output=True)
    assert names(repo) == ["each@b"]

    edit(repo / "params.yaml", "steps: 3", "steps: 4")  # make's key, and `each`'s section
    stale = {s.name: s for s in stale_stages(repo)}
    assert list(stale) == ["make", "each@a", "each@b"]
    assert stale["make"].deps == (DepChange("params.yaml:train.steps", "modified"),)
    assert stale["each@b"].deps == (
        DepChange("params.yaml:train.steps", "modified"),
        DepChange("params.yaml:train.lr", "modified"),
    )

    edit(repo / "params.yaml", "  lr: 0.2\n", "  lr: 0.2\n  warmup: 1\n")  # a new key in the section
    assert (
        DepChange("params.yaml:train.warmup", "new") in {s.name: s for s in stale_stages(repo)}["each@a"].deps
    )


def test_declared_param_missing_from_params_file(repo: Path) -> None:
    edit(repo / "dvc.yaml", "params: [train.steps]", "params: [train.steps, greet]")
    edit(repo / "params.yaml", "greet: hi\n", "")
    stale = stale_stages(repo)
    assert [s.name for s in stale] == ["make"]
    # not in dvc.lock and not in params.yaml: dvc says deleted
    assert stale[0].deps == (DepChange("params.yaml:greet", "deleted"),)


def test_new_stage_and_changed_command_are_named(repo: Path, capsys) -> None:
    with (repo / "dvc.yaml").open("a") as f:
        f.write(
            textwrap.indent(
                textwrap.dedent("""\
                    new_stage:
                      cmd: python -c "open('new.txt', 'w').write('n')"
                      deps: [src/make.py]
                      outs: [new.txt]
                """),
                "  ",
            )
        )
    edit(repo / "dvc.yaml", "foreach: [a, b]", "foreach: [a, b, c]")
    edit(repo / "dvc.yaml", "write(open('out.txt').read() * 2)", "write(open('out.txt').read() * 3)")
    commit(repo, "new stages, changed command, no repro")

    stale = {s.name: s for s in stale_stages(repo)}
    assert list(stale) == ["down", "each@c", "new_stage"]
    assert stale["down"].cmd_changed and stale["down"].deps == ()
    assert stale["each@c"].not_in_lock and stale["new_stage"].not_in_lock
    assert stale["each@c"].command == "dvc repro each@c"

    assert main([str(repo)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:3] == [
        "dvc.lock is stale for down: command changed — run: dvc repro down",
        "dvc.lock is stale for each@c: no entry in dvc.lock (never reproduced) — run: dvc repro each@c",
        "dvc.lock is stale for new_stage: no entry in dvc.lock (never reproduced) — run: dvc repro new_stage",
    ]
    assert err[3] == "to refresh them all, with the stages downstream of them: dvc repro"

    # refreshing the lock and committing it makes the check pass again
    dvc(repo, "repro", "-q")
    commit(repo, "dvc repro")
    assert stale_stages(repo) == []


def test_missing_outputs_and_cache_are_not_staleness(repo: Path, tmp_path: Path) -> None:
    # as on a fresh clone: no outputs in the work tree, no .dvc/cache
    for out in OUTS:
        (repo / out).unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    status = lockcheck.dvc_status(repo)
    assert status["make"] == [{"changed outs": {"out.txt": "not in cache"}}]
    assert status["down"] == [
        {"changed deps": {"out.txt": "deleted"}},
        {"changed outs": {"down.txt": "not in cache"}},
    ]
    assert stale_stages(repo) == []

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "out.txt").exists()
    assert stale_stages(clone) == []


def test_dvc_failure_is_one_line(tmp_path: Path, capsys) -> None:
    run(tmp_path, "git", "init", "-q")  # a git repository without DVC
    with pytest.raises(PipelineError) as info:
        stale_stages(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "dvc status --json failed" in message and "DVC repository" in message
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("lockcheck: dvc status --json failed")


def test_unreadable_params_file_is_one_line(repo: Path) -> None:
    (repo / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(PipelineError, match=r"^dvc status --json failed .*params\.yaml") as info:
        stale_stages(repo)
    assert "\n" not in str(info.value)
