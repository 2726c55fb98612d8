"""Train only the MoE routers on the entire training set, all other weights frozen (Efficient-Empathy §5.1.3).

"The entire training dataset" is D_s ∪ D_r ∪ D_d: every rated sample the split assigned (`--data` repeats).
"""

import json

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.stage import In, Ins, Out


def main(moe: In, data: Ins, out: Out, loss_csv: Out) -> None:
    run = params.load("train_router")
    config = run.config(params.load("train"))
    from empathy_pipeline.efficient_empathy.router import train_router  # heavy (torch): after the checks
    from empathy_pipeline.modeling.training import load_samples

    samples = load_samples(data, run.max_samples, config["seed"])
    print(f"train_router: {samples.height} samples from {', '.join(map(str, data))}")
    report = train_router(moe, samples, config, out, loss_csv)
    print(json.dumps({"out": str(out), **report}))


if __name__ == "__main__":
    stage.run(main)
