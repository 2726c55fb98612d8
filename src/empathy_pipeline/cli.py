"""The `empathy` command: fetch ED, score any predictions file, switch params profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .errors import PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
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
) -> None:
    """Score a predictions file exactly as the pipeline scores its own models; prints JSON."""
    from .metrics import score_file

    result = score_file(file, bertscore=bertscore, bertscore_model=bertscore_model, num_layers=num_layers)
    typer.echo(json.dumps(result, indent=2))


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
