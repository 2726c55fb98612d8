"""Read EmpatheticDialogues (official CSVs or the papers' JSON) into one samples table per split."""

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import write_json, write_parquet
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.data import ed

MAX_PRINTED_PROBLEMS = 20


def main(source: In, out_dir: Out, metrics: Out) -> None:
    p = params.load("prepare")
    report = {}
    for split in p.splits:
        samples, read = ed.read_split(source, p.format, split, p.preprocess, getattr(p.max_conversations, split))
        for problem in read.problems[:MAX_PRINTED_PROBLEMS]:
            print(f"skipped {problem}")
        if len(read.problems) > MAX_PRINTED_PROBLEMS:
            print(f"... and {len(read.problems) - MAX_PRINTED_PROBLEMS} more (see {metrics})")
        ed.check_bad_fraction(read, p.max_bad_fraction)
        ed.check_has_samples(read)
        write_parquet(samples, out_dir / f"{split}.parquet")
        report[split] = read.as_dict()
        print(f"{split}: {read.rows} rows, {read.conversations} conversations -> {read.samples} samples, "
              f"{read.bad_rows} bad rows skipped")
    write_json(metrics, report)


if __name__ == "__main__":
    stage.run(main)
