"""`make setup` away from this machine kind: torch from PyTorch's CPU index, and clear words elsewhere.

This machine kind keeps the lock's torch (2.13.0+cpu) on disk, where pip finds it; a plain machine
has only PyPI, which has no +cpu builds. The fallback test runs the Makefile's own torch line with
pip knowing nothing of this machine (no config, no find-links), PyTorch's CPU index being stood in
for by a local PEP 503 index holding the same wheel.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from make_plan import make_plan

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "requirements" / "platform_check.py"


def torch_line(venv_dir: Path, index: str) -> str:
    """The recipe line `make setup` runs to install torch, as make expands it."""
    return next(line for line in make_plan("setup", f"VENV={venv_dir}", f"TORCH_INDEX={index}")
                if "--no-deps \"torch==" in line)


@pytest.mark.slow
def test_torch_comes_from_the_cpu_index_when_pips_indexes_lack_it(tmp_path):
    wheels = tmp_path / "wheels"
    # This machine's pip (its own config) can get the wheel; the plain pip below cannot.
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                          "torch==2.13.0+cpu"], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"no torch 2.13.0+cpu wheel reachable here: {got.stderr.strip()[-200:]}")
    wheel = next(wheels.glob("torch-2.13.0+cpu-*.whl"))
    (tmp_path / "simple" / "torch").mkdir(parents=True)
    (tmp_path / "simple" / "torch" / "index.html").write_text(f'<a href="{wheel.as_uri()}">{wheel.name}</a>\n')
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    plain = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    plain["PIP_CONFIG_FILE"] = os.devnull  # no find-links, no local indexes, no constraints
    done = subprocess.run(["bash", "-c", torch_line(target, (tmp_path / "simple").as_uri())], env=plain,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trying PyTorch's CPU wheel index" in done.stdout  # the first try failed, as on a plain machine
    version = subprocess.run([str(target / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('torch'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "2.13.0+cpu"


@pytest.mark.parametrize("flags, words", [
    (["--system", "Darwin", "--machine", "arm64"], "resolved for Linux x86_64, this is Darwin arm64"),
    (["--python", "3.12"], "resolved for Python 3.11, this is Python 3.12"),
])
def test_a_platform_the_lock_was_not_made_for_gets_one_line_and_a_way_on(flags, words):
    for lock in ("cpu.lock", "vllm-cpu.lock"):
        done = subprocess.run([sys.executable, str(CHECK), f"requirements/{lock}", *flags], cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 1 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "make setup-unlocked" in lines[0]


def test_the_locks_own_platform_passes_and_setup_checks_it_first():
    header = re.search(r"^# Python (\d+\.\d+)\.\d+, Linux (\w+),", (ROOT / "requirements/cpu.lock").read_text(),
                       re.MULTILINE)
    done = subprocess.run([sys.executable, str(CHECK), "requirements/cpu.lock", "--system", "Linux",
                           "--machine", header[2], "--python", header[1]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == ""
    out = make_plan("setup", "VENV=/nonexistent/venv")
    assert "platform_check.py requirements/cpu.lock" in out[0]  # before the venv is made
