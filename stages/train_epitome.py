"""Train the EPITOME level classifiers (ER, IP, EX; Sharma et al., EMNLP 2020) on its Reddit pairs with
the embedded encoder, and report held-out accuracy and macro-F1 per mechanism. Reddit peer support
is not ED dialogue: the levels these give ED replies are indicative, not calibrated."""

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import write_json
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.data.epitome import MECHANISMS
from empathy_pipeline.evaluation import epitome_levels


def main(source: In, out: Out, metrics: Out) -> None:
    p = params.load("epitome")
    classifier, figures = epitome_levels.train(source, p)
    classifier.save(out)
    write_json(metrics, figures)
    print(f"train_epitome: {figures['n_train']} train / {figures['n_held_out']} held-out pairs "
          f"({figures['duplicates_dropped']} duplicates dropped), {p.method}; held-out "
          + ", ".join(f"{m} acc {figures[m.lower() + '_accuracy']} macro-F1 {figures[m.lower() + '_macro_f1']} "
                      f"(majority {figures[m.lower() + '_majority_macro_f1']})" for m in MECHANISMS)
          + f" -> {out}/")


if __name__ == "__main__":
    stage.run(main)
