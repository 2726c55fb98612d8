"""`empathy report`: the papers' tables from the workspace, git revisions and DVC experiments.

Metrics come from DVC's own JSON (`dvc exp show --json`), never from a hand-written git walk. A row
is one model of one source; its numbers are marked stale when that source's dvc.lock does not
describe its code (lockcheck: the workspace as it is, a git revision in a scratch worktree);
experiments are reproduced by `dvc exp run` and so describe their own code by construction.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.lockcheck import run_dvc, stale_stages

MODELS = ("synth_base", "discriminator", "synth", "efficient_base", "expert_sensibility", "expert_rationality", "moe")
# (column, metrics key) in the order of the papers' tables
COLUMNS = (("B-1", "bleu1"), ("B-2", "bleu2"), ("B-3", "bleu3"), ("B-4", "bleu4"), ("R-1", "rouge1"),
           ("R-2", "rouge2"), ("R-L", "rougeL"), ("D-1", "dist1"), ("D-2", "dist2"), ("CIDEr", "cider"),
           ("BERT-P", "bertscore_p"), ("BERT-R", "bertscore_r"), ("BERT-F1", "bertscore_f1"),
           # Mean EPITOME levels (0-2) of the replies, by classifiers trained on Reddit (train_epitome):
           # for comparing models on ED, not absolute levels.
           ("ER", "epitome_er_mean"), ("IP", "epitome_ip_mean"), ("EX", "epitome_ex_mean"))


@dataclass
class Row:
    source: str              # workspace, a revision (branch name or short sha), or an experiment name
    model: str
    metrics: dict
    n_data: int | None       # training samples behind the model (the papers' #data), where known
    stale: bool = False
    params: dict = field(default_factory=dict)


def _dvc_json(repo: Path, *args: str) -> list:
    out = run_dvc(repo, *args)
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError:
        raise PipelineError(f"dvc {' '.join(args)}: output is not JSON") from None


def _metric_files(data: dict | None) -> dict[str, dict]:
    if not data:
        return {}
    return {path: (entry or {}).get("data") or {} for path, entry in (data.get("metrics") or {}).items()}


def _n_data(files: dict[str, dict], model: str) -> int | None:
    """Training samples of a model from the stage metrics: ED train, + the selection, or the split subset."""
    train = files.get("metrics/prepare.json", {}).get("train", {}).get("samples")
    split = files.get("metrics/split.json", {})
    k = files.get("metrics/diversity.json", {}).get("k")
    return {
        "discriminator": train,
        "synth": train + k if train is not None and k is not None else None,
        "expert_sensibility": split.get("sensibility"),
        "expert_rationality": split.get("rationality"),
        "moe": sum(split.get(s, 0) for s in ("sensibility", "rationality", "discard")) if split else None,
    }.get(model)


def _rows(label: str, data: dict | None, models: Sequence[str], stale: bool) -> list[Row]:
    files = _metric_files(data)
    params = ((data or {}).get("params") or {}).get("params.yaml", {}).get("data") or {}
    return [Row(label, model, files[f"metrics/{model}.json"], _n_data(files, model), stale, params)
            for model in models if files.get(f"metrics/{model}.json")]


def _rev_is_stale(repo: Path, rev: str) -> bool:
    """Does dvc.lock at `rev` describe the code and params at `rev`? Checked in a scratch worktree."""
    scratch = Path(tempfile.mkdtemp(prefix="empathy-report-"))
    tree = scratch / "tree"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=repo,
                       capture_output=True, text=True, check=True)
        return bool(stale_stages(tree))
    except subprocess.CalledProcessError as exc:
        raise PipelineError(f"git worktree for {rev}: {exc.stderr.strip().splitlines()[-1]}") from None
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _commit_of(repo: Path, rev: str) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                          capture_output=True, text=True)
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and sha else None


def collect(repo: Path, revs: Sequence[str] = (), exps: Sequence[str] = (), workspace: bool = True,
            models: Sequence[str] = MODELS, check_stale: bool = True) -> list[Row]:
    """Rows for the workspace, each git revision in `revs` and each experiment named in `exps`."""
    rows: list[Row] = []
    wanted_exps = set(exps)
    found_exps: set[str] = set()
    args = ["exp", "show", "--json"] + [a for rev in revs for a in ("--rev", rev)]
    entries = _dvc_json(repo, *args)
    # DVC names an entry only when a branch or tag points at it: match requests by their commit.
    shas = {rev: _commit_of(repo, rev) for rev in revs}
    revs_left = list(revs)
    for entry in entries:
        name, rev = entry.get("name"), entry.get("rev")
        if rev == "workspace":
            if workspace:
                rows += _rows("workspace", entry.get("data"), models, check_stale and bool(stale_stages(repo)))
        else:
            requested = next((r for r in revs_left if r in (name, rev) or shas[r] == rev), None)
            if requested is not None:
                revs_left.remove(requested)
                got = _rows(requested, entry.get("data"), models,
                            check_stale and _rev_is_stale(repo, rev))
                if not got:
                    raise PipelineError(f"revision {requested}: no metrics/<model>.json there "
                                        f"({(entry.get('error') or {}).get('msg') or 'was dvc repro run and committed?'})")
                rows += got
        for group in entry.get("experiments") or []:
            for exp in group.get("revs") or []:
                if exp.get("name") in wanted_exps:
                    found_exps.add(exp["name"])
                    rows += _rows(exp["name"], exp.get("data"), models, stale=False)
    if revs_left:
        raise PipelineError(f"revision(s) {', '.join(revs_left)}: not known to git or DVC")
    missing = sorted(wanted_exps - found_exps)
    if missing:
        raise PipelineError(f"experiment(s) {', '.join(missing)}: not found (see `dvc exp list`)")
    no_metrics = sorted(wanted_exps - {row.source for row in rows})
    if no_metrics:
        raise PipelineError(f"experiment(s) {', '.join(no_metrics)}: no metrics/<model>.json")
    if not rows:
        raise PipelineError("no metrics/<model>.json in the workspace (run `dvc repro` or `make demo`)")
    return rows


def _best(rows: Sequence[Row]) -> dict[str, float]:
    best = {}
    for _, key in COLUMNS:
        values = [r.metrics[key] for r in rows if isinstance(r.metrics.get(key), int | float)]
        if values:
            best[key] = max(values)
    return best


# ---- replicates: rows of one model whose params differ only in the training seeds ------------------

# The seeds a rerun of the same recipe varies (claims.py varies train.seed); every other param must match.
SEED_PARAMS = ("train.seed", "train_router.router_seed")


@dataclass
class SeedSummary:
    model: str
    seeds: list[str]         # "train.seed=0" style labels, one per replicate
    sources: list[str]
    mean: dict[str, float]
    std: dict[str, float]    # sample standard deviation (n - 1), over the replicates


def _seed_labels(params: dict) -> tuple[dict, str]:
    """The params without the seed keys, and a label of the seed values they held."""
    rest = json.loads(json.dumps(params))
    labels = []
    for dotted in SEED_PARAMS:
        *parents, leaf = dotted.split(".")
        node = rest
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            labels.append(f"{dotted}={node.pop(leaf)}")
    return rest, ", ".join(labels)


def seed_summaries(rows: Sequence[Row]) -> list[SeedSummary]:
    """Mean ± std per model over rows that are the same recipe under different training seeds."""
    groups: dict[tuple[str, str], list[tuple[str, Row]]] = {}
    for row in rows:
        if not row.params:
            continue
        rest, label = _seed_labels(row.params)
        groups.setdefault((row.model, json.dumps(rest, sort_keys=True)), []).append((label, row))
    out = []
    for (model, _), members in groups.items():
        if len({label for label, _ in members}) < 2:
            continue  # one seed (or the same seed twice): nothing to spread over
        mean, std = {}, {}
        for _, key in COLUMNS:
            values = [r.metrics[key] for _, r in members if isinstance(r.metrics.get(key), int | float)]
            if len(values) == len(members):
                mean[key], std[key] = statistics.fmean(values), statistics.stdev(values)
        out.append(SeedSummary(model, [label for label, _ in members], [r.source for _, r in members], mean, std))
    return out


def _render_seed_summaries(summaries: Sequence[SeedSummary]) -> list[str]:
    lines = ["", "Mean ± std (sample, n − 1) over training seeds: rows of one model whose params differ only in "
                 f"{' / '.join(SEED_PARAMS)}.", "",
             "| model | seeds | sources | " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|" + " --- |" * (3 + len(COLUMNS))]
    for s in summaries:
        cells = [s.model, "; ".join(s.seeds), ", ".join(s.sources)]
        cells += [f"{s.mean[k]:.2f} ± {s.std[k]:.2f}" if k in s.mean else "" for _, k in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(rows: Sequence[Row], fmt: str = "md") -> str:
    """Markdown (best value per column in bold, stale rows flagged), CSV or JSON; then mean ± std over seeds."""
    summaries = seed_summaries(rows)
    if fmt == "json":
        return json.dumps([{"source": r.source, "model": r.model, "stale_lock": r.stale, "n_data": r.n_data,
                            **{key: r.metrics.get(key) for _, key in COLUMNS}, "n_test": r.metrics.get("n")}
                           for r in rows]
                          + [{"aggregate": "mean over seeds", "model": s.model, "seeds": s.seeds,
                              "sources": s.sources, **s.mean, "std": s.std} for s in summaries], indent=2)
    header = ["source", "model", *(c for c, _ in COLUMNS), "#data", "n test"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*header, "stale_lock"])
        for r in rows:
            writer.writerow([r.source, r.model, *(r.metrics.get(k) for _, k in COLUMNS), r.n_data,
                             r.metrics.get("n"), r.stale])
        for s in summaries:
            for name, values in (("mean", s.mean), ("std", s.std)):
                writer.writerow([f"{name} over {'; '.join(s.seeds)}", s.model,
                                 *(values.get(k) for _, k in COLUMNS), None, None, None])
        return out.getvalue()
    if fmt != "md":
        raise PipelineError(f"unknown format {fmt!r} (md, csv or json)")
    best = _best(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [f"{r.source} (stale lock)" if r.stale else r.source, r.model]
        for _, key in COLUMNS:
            value = r.metrics.get(key)
            text = "" if value is None else f"{value:.2f}"
            cells.append(f"**{text}**" if value is not None and value == best.get(key) else text)
        cells += ["" if r.n_data is None else str(r.n_data), str(r.metrics.get("n", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.stale for r in rows):
        lines.append("")
        lines.append("(stale lock): that source's dvc.lock does not describe its code, so its numbers were made "
                     "by other code (`empathy check-lock` there says which stages).")
    if summaries:
        lines += _render_seed_summaries(summaries)
    return "\n".join(lines)


# ---- `--ci`: paired bootstrap intervals of each model against a baseline row ----------------------

CI_KEYS = (("B-1", "bleu1"), ("R-1", "rouge1"), ("CIDEr", "cider"))
PREDICTIONS_DIR = Path("outputs") / "predictions"


def ci_rows(rows: Sequence[Row], repo: Path, baseline: str | None = None, n_resamples: int = 1000,
            seed: int = 0) -> tuple[list[dict], list[str]]:
    """B − A intervals (compare.py) of every row against the baseline row, from the workspace's predictions.

    Only workspace rows have their per-item predictions at hand (a revision's or an experiment's
    outputs/predictions are DVC outputs that may not even be in the cache), so other rows get a
    one-line note instead of an interval.
    """
    from empathy_pipeline.analysis.compare import compare, pair, resolve

    if len(rows) < 2:
        return [], ["(ci): one row only, nothing to compare"]
    base = next((r for r in rows if r.model == baseline), None) if baseline else rows[0]
    if base is None:
        raise PipelineError(f"--baseline {baseline}: no such model among the rows "
                            f"({', '.join(dict.fromkeys(r.model for r in rows))})")
    if base.source != "workspace":
        return [], [f"(ci): baseline {base.source}/{base.model} is not a workspace row; its predictions are "
                    "not available, so no intervals"]
    directory = repo / PREDICTIONS_DIR
    try:
        a_name, a_df = resolve(base.model, directory)
    except PipelineError as exc:
        return [], [f"(ci): baseline skipped: {exc}"]
    out, notes = [], []
    for row in rows:
        if row is base:
            continue
        if row.source != "workspace":
            notes.append(f"(ci): {row.source}/{row.model} skipped: predictions of revisions and experiments "
                         "are not in the workspace")
            continue
        try:
            b_name, b_df = resolve(row.model, directory)
            result = compare(pair(a_name, a_df, b_name, b_df), [k for _, k in CI_KEYS],
                             n_resamples=n_resamples, seed=seed)
        except PipelineError as exc:
            notes.append(f"(ci): {row.source}/{row.model} skipped: {exc}")
            continue
        out.append({"source": row.source, "model": row.model, "baseline": base.model,
                    "n_items": result["n_items"], "n_resamples": n_resamples, "seed": seed,
                    **{m["metric"]: {k: m[k] for k in ("diff", "ci_low", "ci_high", "p_value")}
                       for m in result["metrics"]}})
    return out, notes


def render_ci(table: str, cis: Sequence[dict], notes: Sequence[str], fmt: str = "md") -> str:
    """The report followed by the intervals table (md), or both in one JSON object."""
    if fmt == "json":
        return json.dumps({"rows": json.loads(table), "ci": list(cis), "notes": list(notes)}, indent=2)
    if fmt != "md":
        raise PipelineError("--ci needs --format md or json")
    lines = [table]
    if cis:
        lines += ["", f"Paired bootstrap against {cis[0]['baseline']} (row − baseline, 95 % BCa interval, "
                      f"permutation p; {cis[0]['n_resamples']} resamples, seed {cis[0]['seed']}):", "",
                  "| source | model | n | " + " | ".join(f"Δ{c} [95 % CI] | p" for c, _ in CI_KEYS) + " |",
                  "|" + " --- |" * (3 + 2 * len(CI_KEYS))]
        for entry in cis:
            cells = [entry["source"], entry["model"], str(entry["n_items"])]
            for _, key in CI_KEYS:
                m = entry[key]
                cells += [f"{m['diff']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]", f"{m['p_value']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
