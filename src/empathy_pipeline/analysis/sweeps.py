"""`empathy sweep-plot`: one row per DVC experiment of a sweep, as a CSV that `dvc plots` draws.

A sweep (`dvc exp run --queue -S quality.threshold=50,60,70`) leaves its results spread over
several experiments; a DVC plot reads one file. This gathers, from `dvc exp show --json` (DVC's
own view of the experiments, not a git walk), the swept parameter and the chosen metrics of every
experiment into `plots/sweeps/<name>.csv`, sorted by the parameter, which the top-level `plots:`
entries of dvc.yaml render (Synth-Empathy Fig. 8: CIDEr and BLEU-1 and the kept-data count
against T; Efficient-Empathy Table 3: the metrics against the split threshold).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path
from empathy_pipeline.core.lockcheck import run_dvc

# The model whose metrics a sweep of a params section moves: the tail that section feeds.
DEFAULT_MODEL = {"quality": "synth", "diversity": "synth", "train_synth": "synth", "split": "moe",
                 "train_expert": "moe", "train_router": "moe", "btx_merge": "moe"}


@dataclass(frozen=True)
class Point:
    """One experiment of a sweep: its name, the swept parameter's value and one value per column."""

    exp: str
    value: float | int | str
    columns: dict[str, float | int | None]


def column_name(spec: str) -> str:
    """CSV column for a metric spec; no dots, which Vega-Lite (dvc plots) reads as nested fields."""
    return spec.replace(".", "_")


def _metric_path(spec: str, model: str) -> tuple[str, list[str]]:
    """`cider` is a key of metrics/<model>.json; `selection.n_kept` is n_kept of metrics/selection.json."""
    head, *rest = spec.split(".")
    if not rest:
        return f"metrics/{model}.json", [head]
    return f"metrics/{head}.json", rest


def _lookup(tree: dict, keys: Sequence[str]) -> object:
    node: object = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def default_model(param: str) -> str:
    section = param.split(".")[0]
    if section not in DEFAULT_MODEL:
        raise PipelineError(f"--param {param}: no default model for section {section!r}; pass --model")
    return DEFAULT_MODEL[section]


def _experiments(entries: list) -> list[tuple[str, dict]]:
    """(name, data) of every experiment `dvc exp show --json` lists, baseline commits left out."""
    found = []
    for entry in entries:
        for group in entry.get("experiments") or []:
            for exp in group.get("revs") or []:
                if exp.get("name"):
                    found.append((exp["name"], exp.get("data") or {}))
    return found


def _baseline(entries: list) -> tuple[str, dict] | None:
    """The commit the experiments branch from (HEAD, the first non-workspace entry)."""
    for entry in entries:
        if entry.get("rev") != "workspace":
            return (entry.get("name") or str(entry.get("rev"))[:7], entry.get("data") or {})
    return None


def points_from_exp_show(entries: list, param: str, metrics: Sequence[str], model: str,
                         exps: Sequence[str] = (), with_baseline: bool = False) -> list[Point]:
    """Sweep points from parsed `dvc exp show --json`.

    With `exps` empty, every experiment that has the parameter and the metrics (a queued or failed
    one has none yet) is taken; a named experiment without them is an error, naming it.
    """
    if not metrics:
        raise PipelineError("sweep-plot: name at least one --metric")
    available = _experiments(entries)
    if exps:
        by_name = dict(available)
        missing = [name for name in exps if name not in by_name]
        if missing:
            raise PipelineError(f"experiment(s) {', '.join(missing)}: not found (see `dvc exp list`)")
        chosen = [(name, by_name[name]) for name in exps]
    else:
        chosen = available
    if with_baseline and (base := _baseline(entries)) is not None:
        chosen = [base, *chosen]
    keys = param.split(".")
    points, incomplete = [], []
    for name, data in chosen:
        params = (((data.get("params") or {}).get("params.yaml") or {}).get("data")) or {}
        files = {path: (entry or {}).get("data") or {} for path, entry in (data.get("metrics") or {}).items()}
        value = _lookup(params, keys)
        columns = {}
        for spec in metrics:
            path, metric_keys = _metric_path(spec, model)
            found = _lookup(files.get(path) or {}, metric_keys)
            columns[column_name(spec)] = found if isinstance(found, int | float) else None
        if value is None or any(v is None for v in columns.values()):
            lacking = [spec for spec in metrics if columns[column_name(spec)] is None]
            incomplete.append(f"{name} ({param if value is None else ', '.join(lacking)})")
            continue
        points.append(Point(name, value, columns))
    if incomplete and (exps or not points):
        raise PipelineError(f"sweep-plot: no {param} or metric in experiment(s) {'; '.join(incomplete)}")
    if not points:
        raise PipelineError("sweep-plot: no experiments (run `dvc exp run --queue -S ...` and `dvc queue start`)")
    return sorted(points, key=lambda p: (isinstance(p.value, str), p.value, p.exp))


def collect(repo: Path, param: str, metrics: Sequence[str], model: str | None = None,
            exps: Sequence[str] = (), with_baseline: bool = False) -> list[Point]:
    """Sweep points of the experiments in `repo` (all of HEAD's, or the named ones)."""
    out = run_dvc(repo, "exp", "show", "--json")
    try:
        entries = json.loads(out or "[]")
    except json.JSONDecodeError:
        raise PipelineError("dvc exp show --json: output is not JSON") from None
    return points_from_exp_show(entries, param, metrics, model or default_model(param), exps, with_baseline)


def render_csv(points: Sequence[Point], param: str) -> str:
    columns = list(points[0].columns) if points else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column_name(param), *columns, "exp"])
    for p in points:
        writer.writerow([p.value, *(p.columns[c] for c in columns), p.exp])
    return out.getvalue()


def write_csv(points: Sequence[Point], param: str, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(render_csv(points, param))


def plot_png(points: Sequence[Point], param: str, metrics: Sequence[str], counts: Sequence[str],
             path: str | os.PathLike, title: str | None = None,
             errors: dict[str, Sequence[float | None]] | None = None) -> None:
    """The same figure as a PNG (matplotlib): metrics on the left axis, data counts dashed on the right;
    `errors` (a metric's ± bar per point, e.g. its sd over training seeds) draws error bars."""
    from empathy_pipeline.analysis.plots import save_figure, subplots

    x = [p.value for p in points]
    fig, ax = subplots(figsize=(6.4, 3.8))
    for spec in metrics:
        y = [p.columns[column_name(spec)] for p in points]
        bars = (errors or {}).get(spec)
        if bars is None:
            ax.plot(x, y, marker="o", label=spec)
        else:
            ax.errorbar(x, y, yerr=[b or 0.0 for b in bars], marker="o", capsize=3, label=f"{spec} (± sd)")
    ax.set_xlabel(param)
    ax.set_ylabel("score")
    handles, labels = ax.get_legend_handles_labels()
    if counts:
        right = ax.twinx()
        for spec, color, marker in zip(counts, ("#555555", "#aaaaaa", "#8c564b", "#7f7f7f"), "sD^v", strict=False):
            right.plot(x, [p.columns[column_name(spec)] for p in points], marker=marker, linestyle="--",
                       color=color, label=f"{spec} (right axis)")
        right.set_ylabel("samples")
        right.yaxis.get_major_locator().set_params(integer=True)
        more_h, more_l = right.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    # Below the axes: inside, it would hide the points of a short sweep.
    ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    ax.set_title(title or f"Sweep of {param} ({len(points)} experiments)")
    save_figure(fig, path)
