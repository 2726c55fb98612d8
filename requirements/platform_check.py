"""Can this Python install a lock file? One line saying what to do instead, before pip says it worse.

    python requirements/platform_check.py requirements/cpu.lock [--system S --machine M --python X.Y]

A lock pins one wheel per compiled package, built for the Python and platform named in the lock's
own header ("# Python 3.11.7, Linux x86_64, ..."); elsewhere `pip --require-hashes` fails with a
resolver trace about hashes or missing distributions. The flags stand in for this machine's values
(tests check the macOS and Python 3.12 messages from here).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from pathlib import Path

HEADER = re.compile(r"^# Python (\d+)\.(\d+)\.\d+, (\w+) (\w+),", re.MULTILINE)


def problem(lock: Path, system: str, machine: str, python: str) -> str | None:
    found = HEADER.search(lock.read_text(encoding="utf-8")[:2000])
    if found is None:
        return f"{lock}: no '# Python X.Y.Z, System machine,' header line; regenerate it (make lock)"
    want_python, want_system, want_machine = f"{found[1]}.{found[2]}", found[3], found[4]
    unlocked = ("or `make setup-unlocked` (the newest packages that pyproject.toml allows: the pipeline runs, "
                "but dvc.lock hashes and metrics will not match the committed ones)")
    if (system, machine) != (want_system, want_machine):
        return (f"{lock} is resolved for {want_system} {want_machine}, this is {system} {machine}: its torch "
                f"+cpu build and compiled wheels exist only there. Use a {want_system} {want_machine} machine "
                f"(a container works) {unlocked}")
    if python != want_python:
        return (f"{lock} is resolved for Python {want_python}, this is Python {python}. Install Python "
                f"{want_python} (pyenv, uv python install {want_python}, or your package manager) and run "
                f"`make setup PYTHON=python{want_python}`, {unlocked}")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--system", default=platform.system())
    parser.add_argument("--machine", default=platform.machine())
    parser.add_argument("--python", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    args = parser.parse_args()
    found = problem(args.lock, args.system, args.machine, args.python)
    if found:
        print(f"make setup: {found}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
