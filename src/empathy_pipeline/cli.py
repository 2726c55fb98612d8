"""The `empathy` command: fetch ED, score predictions, check params and dvc.lock, report tables, switch profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.judges.ask import (  # light: the judges' defaults
    DEFAULT_RETRIES,
    DEFAULT_RETRY_TEMPERATURE,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        from empathy_pipeline.core.provenance import versions

        typer.echo(f"empathy-pipeline {version('empathy-pipeline')}")
        for name, found in versions().items():
            typer.echo(f"  {name} {found or 'not installed'}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the versions that produce the numbers, then exit.")) -> None:
    """The `empathy` command."""
data_app = typer.Typer(no_args_is_help=True, help="The public releases: ED, EPITOME, the papers' rated test sets.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument("ed", help="ed (official EmpatheticDialogues), epitome (EPITOME Reddit), "
                                          "efficient-empathy (the papers' rated test/valid sets)."),
    dest: Path = typer.Option(Path("data/external"), help="Where the release goes: DEST/<release folder>."),
    mirror: str | None = typer.Option(None, help="A directory URL holding the release's files under their own "
                                                 "names, used instead of the public URLs."),
    timeout: float = typer.Option(30.0, help="Seconds before giving up on a download."),
) -> None:
    """Download a public release and check every file against its pinned sha256."""
    from empathy_pipeline.data.fetch import RELEASES, fetch

    target, fetched = fetch(name, dest, timeout, mirror)
    release = RELEASES[name]
    done = f"{fetched} file(s) downloaded and checked" if fetched else "already in place"
    typer.echo(f"{name}: {done} in {target} ({release.terms}); set {release.param}: {target} in params.yaml")


@app.command("score")
def score(
    file: Path = typer.Argument(..., help="Predictions: .parquet, .jsonl or .csv with columns prediction, reference."),
    bertscore: bool = typer.Option(True, "--bertscore/--no-bertscore", help="Compute BERTScore (needs the model)."),
    bertscore_model: str = typer.Option("all-minilm-l6-v2", help="Local path or embedded name of the BERTScore model."),
    num_layers: int | None = typer.Option(6, help="Which hidden layer BERTScore uses."),
    bertscore_rescale: bool = typer.Option(False, "--bertscore-rescale/--no-bertscore-rescale",
                                           help="Baseline-rescale BERTScore (the papers' scale)."),
    bertscore_baseline: Path | None = typer.Option(None, help="A LAYER,P,R,F baseline tsv (default: bert-score's for the model)."),
    epitome: Path | None = typer.Option(None, help="EPITOME level classifiers (the train_epitome stage's models/epitome): "
                                        "adds ER/IP/EX levels, read against the file's context column. Default: "
                                        "models/epitome when it exists and the file has a context column."),
) -> None:
    """Score a predictions file exactly as the pipeline scores its own models; prints JSON."""
    from empathy_pipeline.evaluation.metrics import score_file

    default = Path("models/epitome")  # trained on Reddit: on ED replies the levels are indicative
    result = score_file(file, bertscore=bertscore, bertscore_model=bertscore_model, num_layers=num_layers,
                        bertscore_rescale=bertscore_rescale,
                        bertscore_baseline=str(bertscore_baseline) if bertscore_baseline else None,
                        epitome=epitome or (default if (default / "config.json").is_file() else None),
                        epitome_optional=epitome is None)
    typer.echo(json.dumps(result, indent=2))


@app.command("compare")
def compare(
    a: str = typer.Argument(..., help="Model A: an evaluated model name (outputs/predictions/A.parquet) or a predictions file."),
    b: str = typer.Argument(..., help="Model B, likewise; the difference reported is B - A."),
    n_resamples: int = typer.Option(1000, help="Bootstrap resamples and random A/B swaps of the permutation test."),
    seed: int = typer.Option(0, help="Seed of both resampling procedures (same seed, same numbers)."),
    confidence: float = typer.Option(0.95, help="Confidence level of the interval."),
    method: str = typer.Option("BCa", help="scipy.stats.bootstrap interval: BCa, percentile or basic."),
    metrics: list[str] = typer.Option([], "--metrics", help="Only these metric keys (bleu1, rouge1, cider, ...); repeatable or comma-separated."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a Markdown table."),
    predictions_dir: Path = typer.Option(Path("outputs/predictions"), help="Where `evaluate` writes <model>.parquet."),
    bertscore: bool = typer.Option(True, "--bertscore/--no-bertscore", help="Include BERTScore (needs the model)."),
    bertscore_model: str = typer.Option("all-minilm-l6-v2", help="Local path or embedded name of the BERTScore model."),
    num_layers: int | None = typer.Option(6, help="Which hidden layer BERTScore uses."),
    bertscore_rescale: bool = typer.Option(False, "--bertscore-rescale/--no-bertscore-rescale",
                                           help="Baseline-rescale BERTScore (the papers' scale)."),
) -> None:
    """Paired bootstrap CI and permutation p-value of B - A for every metric, on the items both answered."""
    from empathy_pipeline.analysis.compare import BERTSCORE_KEYS, METRICS, compare_specs, render

    keys = [k.strip() for item in metrics for k in item.split(",") if k.strip()] or list(METRICS)
    if not bertscore:
        keys = [k for k in keys if k not in BERTSCORE_KEYS]
    result = compare_specs(a, b, predictions_dir, keys=keys, n_resamples=n_resamples, seed=seed,
                           confidence=confidence, method=method,
                           bertscore_options={"model": bertscore_model, "num_layers": num_layers,
                                              "rescale": bertscore_rescale})
    typer.echo(render(result, "json" if as_json else "md"))


@app.command("check")
def check(params_file: Path = typer.Option(Path("params.yaml"), help="The params file to validate.")) -> None:
    """Validate every params section (types, ranges, backends, paths, unknown keys) without running a stage."""
    from empathy_pipeline.core.params import check as check_params

    problems = check_params(params_file)
    for line in problems:
        typer.echo(line, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{params_file}: every section is valid")


@app.command("check-lock")
def check_lock(repo: Path = typer.Option(Path("."), help="The project directory.")) -> None:
    """Fail with one line per stage whose code or params changed since dvc.lock was written (runs no stage)."""
    from empathy_pipeline.core.lockcheck import OK_MESSAGE, format_report, stale_stages

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
    ci: bool = typer.Option(False, "--ci", help="Add paired-bootstrap intervals of B-1, R-1, CIDEr against --baseline (workspace rows)."),
    baseline: str | None = typer.Option(None, help="The model the --ci differences are taken against (default: the first row)."),
    n_resamples: int = typer.Option(1000, help="Resamples for --ci."),
    seed: int = typer.Option(0, help="Seed for --ci."),
) -> None:
    """The papers' tables (B-1..4, R-1/2/L, D-1/2, CIDEr, BERT P/R/F1, #data) across workspace, commits, experiments."""
    from empathy_pipeline.analysis.report import MODELS, ci_rows, collect, render, render_ci

    if ci and fmt not in ("md", "json"):
        raise PipelineError("--ci needs --format md or json")
    rows = collect(repo, revs=rev, exps=exp, workspace=not no_workspace, models=model or MODELS)
    if not ci:
        typer.echo(render(rows, fmt))
        return
    cis, notes = ci_rows(rows, repo, baseline, n_resamples=n_resamples, seed=seed)
    typer.echo(render_ci(render(rows, fmt), cis, notes, fmt))


@app.command("sweep-plot")
def sweep_plot(
    param: str = typer.Option(..., "--param", help="The swept parameter, dotted: quality.threshold, split.threshold."),
    metric: list[str] = typer.Option([], "--metric", help="A key of metrics/<model>.json (cider, bleu1); repeatable."),
    count: list[str] = typer.Option([], "--count", help="A data count, FILE.KEY of metrics/FILE.json "
                                    "(selection.n_kept, diversity.k, split.sensibility); repeatable."),
    model: str | None = typer.Option(None, "--model", help="Whose metrics (default: synth for quality/diversity, moe for split)."),
    exp: list[str] = typer.Option([], "--exp", help="Only these experiments (default: every one of HEAD's); repeatable."),
    with_baseline: bool = typer.Option(False, "--with-baseline", help="Add HEAD's own committed metrics as a point."),
    out: Path = typer.Option(..., "--out", help="The CSV that dvc.yaml's top-level plots draw (plots/sweeps/*.csv)."),
    png: Path | None = typer.Option(None, "--png", help="Also draw the figure to this PNG (matplotlib)."),
    repo: Path = typer.Option(Path("."), help="The project directory."),
) -> None:
    """One CSV row per DVC experiment of a sweep: the parameter, the metrics, the data counts (for `dvc plots`)."""
    from empathy_pipeline.analysis.sweeps import collect, plot_png, write_csv

    points = collect(repo, param, [*metric, *count], model, exps=exp, with_baseline=with_baseline)
    write_csv(points, param, out)
    if png is not None:
        plot_png(points, param, metric, count, png)
    typer.echo(f"{out}: {len(points)} experiment(s) of {param}")


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
    from empathy_pipeline.analysis.plots import plot_judge_agreement
    from empathy_pipeline.core import params
    from empathy_pipeline.core.io import write_json
    from empathy_pipeline.judges.rating_agreement import judge_agreement as run
    from empathy_pipeline.llm.backends import model_backend
    from empathy_pipeline.modeling.models import resolve_chat_model

    rate, llm, split = params.load("rate"), params.load("llm"), params.load("split")
    backend = model_backend(llm, resolve_chat_model(rate.model, base))
    figures, table = run(ratings, backend, rate, split.threshold, n=n or None, seed=seed, shard_dir=shards,
                         settings=backend.settings)
    figures = {"judge": rate.model if rate.model != "base" else str(base), "backend": llm.backend,
               "subset_seed": seed, **figures}
    write_json(out, figures)
    plot_judge_agreement(table, figures, plot)
    typer.echo(json.dumps(figures, indent=2))


@app.command("judge-levels")
def judge_levels(
    n: int | None = typer.Option(60, help="A seeded subset of the held-out pairs (0 = all)."),
    seed: int = typer.Option(0, help="Seed of the subset."),
    model: str = typer.Option("models/synth_base", help="The judge: a HF directory, hub id or served model name."),
    data: Path = typer.Option(Path("../shared/data/epitome"), help="The EPITOME Reddit CSVs."),
    mechanism: list[str] = typer.Option([], "--mechanism", help="Only these of ER, IP, EX; repeatable (default all)."),
    retries: int = typer.Option(DEFAULT_RETRIES, min=0, help="Ask a reply that did not parse again up to this many times."),
    retry_temperature: float = typer.Option(DEFAULT_RETRY_TEMPERATURE, min=0.0, help="Sampling temperature of the retries (seeded per pair)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
    out: Path | None = typer.Option(None, help="Also write every judge call (pair, mechanism, levels, reply) here (.parquet)."),
) -> None:
    """Judge EPITOME levels (ER/IP/EX) of held-out pairs with an LLM (params llm); kappa vs the human levels."""
    from empathy_pipeline.core import params
    from empathy_pipeline.core.io import write_parquet
    from empathy_pipeline.judges.levels import MECHANISMS, format_figures, run
    from empathy_pipeline.llm.backends import model_backend

    llm = params.load("llm")
    # The classifiers' split (params epitome) where there is one: both are then scored on the same pairs.
    split = params.load("epitome") if "epitome" in params.read() else None
    figures, judged = run(data, model_backend(llm, model), n=n or None, seed=seed,
                          mechanisms=[m.upper() for m in mechanism] or MECHANISMS, retries=retries,
                          retry_temperature=retry_temperature,
                          **({"held_out_fraction": split.held_out_fraction, "split_seed": split.seed} if split else {}))
    figures = {"judge": model, "backend": llm.backend, **figures}
    if out is not None:
        write_parquet(judged, out)
    typer.echo(json.dumps(figures, indent=2) if as_json else format_figures(figures, f"{model} ({llm.backend})"))


@app.command("judge-pairs")
def judge_pairs(
    a: str = typer.Option(..., "--a", help="Model A: an evaluated model's name or a predictions file."),
    b: str = typer.Option(..., "--b", help="Model B: an evaluated model's name or a predictions file."),
    n: int | None = typer.Option(50, help="A seeded subset of the items both answered (0 = all)."),
    seed: int = typer.Option(0, help="Seed of the subset."),
    judge_model: str = typer.Option("models/synth_base", help="The judge: a HF directory, hub id or served model name."),
    length_margin: int = typer.Option(3, min=0, help="Replies within this many words of each other are 'similar'."),
    predictions_dir: Path = typer.Option(Path("outputs/predictions"), help="Where NAME.parquet of a model name is."),
    contexts: Path = typer.Option(Path("data/prepared/test.parquet"),
                                  help="The test split, for predictions that carry no context column."),
    retries: int = typer.Option(DEFAULT_RETRIES, min=0, help="Ask a reply that did not parse again up to this many times."),
    retry_temperature: float = typer.Option(DEFAULT_RETRY_TEMPERATURE, min=0.0, help="Sampling temperature of the retries (seeded per item)."),
    human: tuple[Path, Path] | None = typer.Option(None, "--human", metavar="SHEET KEY",
                                                   help="A filled `ab export` sheet and its key.csv: adds the "
                                                        "judge's agreement with that rater on the items both judged."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
    out: Path | None = typer.Option(None, help="Also write the per-item verdicts of both orders here (.parquet)."),
) -> None:
    """Which of two models' replies an LLM judge prefers per criterion, asked in both orders (params llm)."""
    from empathy_pipeline.analysis.ab import load_side
    from empathy_pipeline.core import params
    from empathy_pipeline.core.io import write_parquet
    from empathy_pipeline.judges.pairwise import run
    from empathy_pipeline.llm.backends import model_backend

    side_a, side_b = load_side(a, predictions_dir), load_side(b, predictions_dir)
    llm = params.load("llm")
    result, verdicts = run(side_a, side_b, model_backend(llm, judge_model),
                           judge=judge_model, backend_name=llm.backend, n=n or None, seed=seed,
                           contexts=contexts, repo=Path("."), length_margin=length_margin, retries=retries,
                           retry_temperature=retry_temperature, human=human)
    if out is not None:
        write_parquet(verdicts, out)
    typer.echo(json.dumps(result.as_json(), indent=2) if as_json else result.text())


@app.command("profile")
def profile(
    name: str = typer.Argument(..., help="demo (embedded CPU model) or paper (the papers' settings, GPU)."),
    params_file: Path = typer.Option(Path("params.yaml"), help="The params file to rewrite."),
) -> None:
    """Switch params.yaml to a profile, keeping its comments (dvc then reruns what changed)."""
    from empathy_pipeline.core.profiles import apply_profile

    changed = apply_profile(name, params_file)
    typer.echo(f"{params_file}: profile {name}, {len(changed)} value(s) changed" +
               ("".join(f"\n  {k}" for k in changed)))


ab_app = typer.Typer(no_args_is_help=True, help="Human A/B test: a blind rating sheet of two models, and its tally.")
app.add_typer(ab_app, name="ab")


@ab_app.command("export")
def ab_export(
    a: str = typer.Option(..., "--a", help="Model A: an evaluated model's name or a predictions file."),
    b: str = typer.Option(..., "--b", help="Model B: an evaluated model's name or a predictions file."),
    n: int = typer.Option(200, help="Items on the sheet (a seeded sample of the contexts both answered)."),
    seed: int = typer.Option(0, help="Seed of the sample and of the reply order."),
    out_dir: Path | None = typer.Option(None, help="Where sheet.csv, sheet.html, key.csv go (default outputs/ab/A_vs_B_seedS)."),
    predictions_dir: Path = typer.Option(Path("outputs/predictions"), help="Where NAME.parquet of a model name is."),
    contexts: Path = typer.Option(Path("data/prepared/test.parquet"),
                                  help="The test split, for predictions that carry no context column."),
) -> None:
    """Write a blind sheet (CSV + a self-contained HTML page) of two models' replies, and its key apart."""
    from empathy_pipeline.analysis.ab import export

    result = export(a, b, n, seed, out_dir, predictions_dir=predictions_dir, contexts=contexts)
    if result.note:
        typer.echo(f"note: {result.note}", err=True)
    typer.echo(f"{result.out_dir}: sheet.csv, sheet.html ({result.n} items) for the rater; keep key.csv to yourself")


@ab_app.command("tally")
def ab_tally(
    sheet: Path = typer.Argument(..., help="The filled sheet (sheet.csv or the page's sheet-filled.csv)."),
    key: Path = typer.Argument(..., help="The export's key.csv."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Count blank cells and missing items as skipped."),
) -> None:
    """Win/tie/lose rates of A against B per criterion (coherence, empathy, informativeness, continuity)."""
    from empathy_pipeline.analysis.ab import tally

    result = tally(sheet, key, allow_incomplete=allow_incomplete)
    typer.echo(json.dumps(result.as_json(), indent=2) if as_json else result.text())


@app.command("claims")
def claims(
    profile_name: str = typer.Option("real-mini", "--profile", help="The profile every arm runs under (profiles/NAME.yaml)."),
    seeds: int = typer.Option(3, help="Training seeds of every arm, 0..N-1: a verdict needs 3 or more per arm (a rerun adds only the missing ones)."),
    only: str | None = typer.Option(None, help="Only these claims, e.g. 1,3 (their arms and rows); 0 is the A-vs-A control."),
    results: Path = typer.Option(Path("benchmarks/results/claims"), help="Finished arms (commit them: a rerun skips them)."),
    table_only: bool = typer.Option(False, "--table-only", help="Recompute the table from the finished arms; run nothing."),
    n_resamples: int = typer.Option(1000, help="Bootstrap and permutation resamples per comparison."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
) -> None:
    """Test the papers' nine claims: each arm a DVC experiment, each claim a paired bootstrap (docs/results.md)."""
    from empathy_pipeline.analysis import claims as claims_lib
    from empathy_pipeline.core.profiles import load_profile

    try:
        chosen = [int(x) for x in only.split(",")] if only else None
    except ValueError:
        raise PipelineError(f"--only: {only!r} is not a list of claim numbers (0-9, e.g. 1,3)") from None
    unknown = sorted(set(chosen or ()) - set(range(10)))
    if unknown:
        raise PipelineError(f"--only: no claim {', '.join(map(str, unknown))} (the claims are 1-9; 0 is the A-vs-A control)")
    # The table is always the whole one, every claim from every finished arm under one Holm family: --only
    # picks what runs and which rows print, and never leaves a committed table with the other claims cut out.
    if table_only:
        table = claims_lib.evaluate_claims(results, n_resamples=n_resamples, bertscore_options=claims_lib.bertscore_options(
            Path("."), load_profile(profile_name, Path("profiles"))))
    else:
        table = claims_lib.run_all(Path("."), profile_name, list(range(seeds)), results, chosen,
                                   log=typer.echo, n_resamples=n_resamples)
    claims_lib.write_outputs(table, results.parent / "claims.json", results / "claims.md", results / "quality_sweep.png")
    typer.echo(json.dumps(table, indent=2) if as_json else claims_lib.render(table, chosen))


def main() -> None:
    try:
        app()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
