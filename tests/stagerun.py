"""Run a stage script in-process with exactly the command line dvc.yaml gives it."""

from __future__ import annotations

import importlib.util
import os
import typing
from contextlib import contextmanager
from pathlib import Path

from dvc_spec import STAGES, command


@contextmanager
def cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_stage(name: str, project: Path, backend_for=None) -> dict[str, list[str]]:
    """Import the stage script fresh, point its load_backend at `backend_for`, run main() as dvc would."""
    script, options = command(STAGES[name])
    spec = importlib.util.spec_from_file_location(f"stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if backend_for is not None:
        module.load_backend = lambda cfg, model=None, adapter=None: backend_for(model, adapter)
    kwargs = {}
    for option, values in options.items():
        kind = typing.get_args(module.main.__annotations__[option])[0]  # Path, list[Path] or str
        kwargs[option] = [Path(v) for v in values] if kind == list[Path] else kind(values[0])
    with cwd(project):
        module.main(**kwargs)
    return options


def untrained_epitome(directory: Path) -> None:
    """An EPITOME level-classifier directory with fixed random heads on MiniLM: evaluate reads one
    (`--epitome`); what its levels say does not matter to a test of something else, only that the
    stage can run (tests/test_epitome.py tests the trained classifier)."""
    import numpy as np

    from empathy_pipeline.epitome import MECHANISMS, EpitomeClassifier

    rng = np.random.default_rng(0)
    heads = {m: (rng.normal(size=(3, 4 * 384)), np.zeros(3)) for m in MECHANISMS}
    EpitomeClassifier(None, heads, {"method": "frozen_head", "encoder": "all-minilm-l6-v2"}).save(directory)
