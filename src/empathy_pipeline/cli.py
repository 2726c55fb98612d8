"""The `empathy` command: fetch ED, score predictions, check params and dvc.lock, report tables, switch profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .errors import PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        from .provenance import versions

        typer.echo(f"empathy-pipeline {version('empathy-pipeline')}")
        for name, found in versions().items():
            typer.echo(f"  {name} {found or 'not installed'}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the versions that produce the numbers, then exit.")) -> None:
    """The `empathy` command."""
data_app = typer.Typer(no_args_is_help=True, help="EmpatheticDialogues data.")
app.add_typer(data_app, name="data")

ED_URL = "https://dl.fbaipublicfiles.com/parlai/empatheticdialogues/empatheticdialogues.tar.gz"


@data_app.command("fetch")
def data_fetch(
    dest: Path = typer.Option(Path("data/external"), help="Where to unpack; prepare.source should point at DEST/empatheticdialogues."),
    url: str = typer.Option(ED_URL, help="The official ED tarball."),
    timeout: float = typer.Option(30.0, help="Seconds before giving up on the download."),
) -> None:
    """Download the official empatheticdialogues.tar.gz and unpack train/valid/test.csv."""
    from .data_fetch import fetch_ed

    target = fetch_ed(url, dest, timeout)
    typer.echo(f"ED unpacked to {target}; set prepare.source: {target} in params.yaml")


@app.command("score")
def score(
    file: Path = typer.Argument(..., help="Predictions: .parquet, .jsonl or .csv with columns prediction, reference."),
    bertscore: bool = typer.Option(True, "--bertscore/--no-bertscore", help="Compute BERTScore (needs the model)."),
    bertscore_model: str = typer.Option("all-minilm-l6-v2", help="Local path or embedded name of the BERTScore model."),
    num_layers: int | None = typer.Option(6, help="Which hidden layer BERTScore uses."),
    bertscore_rescale: bool = typer.Option(False, "--bertscore-rescale/--no-bertscore-rescale",
                                           help="Baseline-rescale BERTScore (the papers' scale)."),
    bertscore_baseline: Path | None = typer.Option(None, help="A LAYER,P,R,F baseline tsv (default: bert-score's for the model)."),
) -> None:
    """Score a predictions file exactly as the pipeline scores its own models; prints JSON."""
    from .metrics import score_file

    result = score_file(file, bertscore=bertscore, bertscore_model=bertscore_model, num_layers=num_layers,
                        bertscore_rescale=bertscore_rescale,
                        bertscore_baseline=str(bertscore_baseline) if bertscore_baseline else None)
    typer.echo(json.dumps(result, indent=2))


@app.command("check")
def check(params_file: Path = typer.Option(Path("params.yaml"), help="The params file to validate.")) -> None:
    """Validate every params section (types, ranges, backends, paths, unknown keys) without running a stage."""
    from .params import check as check_params

    problems = check_params(params_file)
    for line in problems:
        typer.echo(line, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{params_file}: every section is valid")


@app.command("check-lock")
def check_lock(repo: Path = typer.Option(Path("."), help="The project directory.")) -> None:
    """Fail with one line per stage whose code or params changed since dvc.lock was written (runs no stage)."""
    from .lockcheck import OK_MESSAGE, format_report, stale_stages

    stale = stale_stages(repo)
    if stale:
        typer.echo(format_report(stale), err=True)
        raise typer.Exit(1)
    typer.echo(OK_MESSAGE)


@app.command("report")
def report(
    rev: list[str] = typer.Option([], "--rev", help="A git revision (branch, tag, sha) to include; repeatable."),
    exp: list[str] = typer.Option([], "--exp", help="A DVC experiment (name from `dvc exp list`) to include; repeatable."),
    no_workspace: bool = typer.Option(False, "--no-workspace", help="Leave the workspace's metrics out."),
    model: list[str] = typer.Option([], "--model", help="Only these models (default: all six); repeatable."),
    fmt: str = typer.Option("md", "--format", help="md (best value per column in bold), csv or json."),
    repo: Path = typer.Option(Path("."), help="The project directory."),
) -> None:
    """The papers' tables (B-1..4, R-1/2/L, D-1/2, CIDEr, BERT P/R/F1, #data) across workspace, commits, experiments."""
    from .report import MODELS, collect, render

    rows = collect(repo, revs=rev, exps=exp, workspace=not no_workspace, models=model or MODELS)
    typer.echo(render(rows, fmt))


@app.command("judge-agreement")
def judge_agreement(
    ratings: Path = typer.Option(Path("../shared/data/efficient-empathy/test_results.json"),
                                 help="The papers' test set with the authors' ChatGPT ratings (paper JSON)."),
    n: int | None = typer.Option(200, help="A seeded subset of this many items (0 = all 5,255)."),
    seed: int = typer.Option(0, help="Seed of the subset."),
    base: Path = typer.Option(Path("models/efficient_base"), help="What rate.model: base means."),
    out: Path = typer.Option(Path("metrics/judge_agreement.json"), help="The figures (JSON)."),
    plot: Path = typer.Option(Path("plots/judge_agreement.png"), help="Scatter per score and the split confusion."),
    shards: Path = typer.Option(Path("outputs/shards/judge_agreement"), help="Resumable rating shards."),
) -> None:
    """Rate the papers' test items with the configured judge (params rate, llm) and compare with ChatGPT's."""
    from . import params
    from .agreement import judge_agreement as run
    from .io import write_json
    from .llm import load_backend
    from .llm_table import LazyBackend
    from .models import model_fingerprint, resolve_chat_model
    from .plots import plot_judge_agreement

    rate, llm, split = params.load("rate"), params.load("llm"), params.load("split")
    model = resolve_chat_model(rate.model, base)
    backend = LazyBackend(lambda: load_backend(llm, model=model))
    figures, table = run(ratings, backend, rate, split.threshold, n=n or None, seed=seed, shard_dir=shards,
                         settings={"model": model_fingerprint(model), "llm": llm.model_dump()})
    figures = {"judge": rate.model if rate.model != "base" else str(base), "backend": llm.backend,
               "subset_seed": seed, **figures}
    write_json(out, figures)
    plot_judge_agreement(table, figures, plot)
    typer.echo(json.dumps(figures, indent=2))


@app.command("profile")
def profile(
    name: str = typer.Argument(..., help="demo (embedded CPU model) or paper (the papers' settings, GPU)."),
    params_file: Path = typer.Option(Path("params.yaml"), help="The params file to rewrite."),
) -> None:
    """Switch params.yaml to a profile, keeping its comments (dvc then reruns what changed)."""
    from .profiles import apply_profile

    changed = apply_profile(name, params_file)
    typer.echo(f"{params_file}: profile {name}, {len(changed)} value(s) changed" +
               ("".join(f"\n  {k}" for k in changed)))


def main() -> None:
    try:
        app()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
