"""What `make` would run, as a list of recipe lines: `make -n -B` with nothing inherited from a parent make.

Under `make test` the suite runs inside make, which exports MAKEFLAGS and MAKELEVEL: a child make then
prints "make[1]: Entering directory ..." first and takes the parent's flags. The dry run here starts
from a clean slate, so its lines are the recipe's own wherever the suite is started from.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INHERITED = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def make_plan(*args: str) -> list[str]:
    """The recipe lines `make -n -B ARGS` prints (-B: every recipe even where its target is up to date)."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED}
    done = subprocess.run(["make", "--no-print-directory", "-n", "-B", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()
