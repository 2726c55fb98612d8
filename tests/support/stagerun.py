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
    """Import the stage script fresh, run main() as dvc would; with `backend_for(model, adapter)`, every
    backend the stage loads (llm.backends.load_backend, through model_backend) is that one instead."""
    from empathy_pipeline.llm import backends

    script, options = command(STAGES[name])
    spec = importlib.util.spec_from_file_location(f"stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kwargs = {}
    for option, values in options.items():
        kind = typing.get_args(module.main.__annotations__[option])[0]  # Path, list[Path] or str
        kwargs[option] = [Path(v) for v in values] if kind == list[Path] else kind(values[0])
    real = backends.load_backend
    if backend_for is not None:
        backends.load_backend = lambda cfg, model=None, adapter=None: backend_for(model, adapter)
    try:
        with cwd(project):
            module.main(**kwargs)
    finally:
        backends.load_backend = real
    return options


def untrained_epitome(directory: Path) -> None:
    """An EPITOME level-classifier directory with fixed random heads on MiniLM: evaluate reads one
    (`--epitome`); what its levels say does not matter to a test of something else, only that the
    stage can run (tests/evaluation/test_epitome.py tests the trained classifier)."""
    import numpy as np

    from empathy_pipeline.data.epitome import MECHANISMS
    from empathy_pipeline.evaluation.epitome_levels import EpitomeClassifier

    rng = np.random.default_rng(0)
    heads = {m: (rng.normal(size=(3, 4 * 384)), np.zeros(3)) for m in MECHANISMS}
    EpitomeClassifier(None, heads, {"method": "frozen_head", "encoder": "all-minilm-l6-v2"}).save(directory)
