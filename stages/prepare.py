"""Read EmpatheticDialogues (official CSVs or the papers' JSON) into one samples table per split."""

from pathlib import Path

from empathy_pipeline import ed, params, stage
from empathy_pipeline.io import write_json, write_parquet

OUT_DIR = Path("data/prepared")
MAX_PRINTED_PROBLEMS = 20


def main() -> None:
    p = params.section("prepare")
    source = Path(p["source"])
    if not source.is_dir():
        raise ed.PipelineError(
            f"prepare.source: directory {source} not found (run `empathy data fetch` or point it at the ED CSVs)"
        )
    caps = p.get("max_conversations") or {}
    report = {}
    for split in p.get("splits", ed.SPLITS):
        samples, read = ed.read_split(source, p["format"], split, p.get("preprocess", "paper"), caps.get(split))
        for problem in read.problems[:MAX_PRINTED_PROBLEMS]:
            print(f"skipped {problem}")
        if len(read.problems) > MAX_PRINTED_PROBLEMS:
            print(f"... and {len(read.problems) - MAX_PRINTED_PROBLEMS} more (see metrics/prepare.json)")
        ed.check_bad_fraction(read, float(p.get("max_bad_fraction", 0.05)))
        write_parquet(samples, OUT_DIR / f"{split}.parquet")
        report[split] = read.as_dict()
        print(f"{split}: {read.rows} rows, {read.conversations} conversations -> {read.samples} samples, "
              f"{read.bad_rows} bad rows skipped")
    write_json("metrics/prepare.json", report)


if __name__ == "__main__":
    stage.run(main, "prepare")
