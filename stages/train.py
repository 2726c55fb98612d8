"""LoRA supervised fine-tuning of the base model: the discriminator (SFT on ED), the final
Synth-Empathy model (ED train + selected synthetic data) and the two Efficient-Empathy experts.

`--section` names the run's params section (its max_samples and any `train` key it overrides);
`--data` may repeat. Multi-GPU / DeepSpeed: the stage's launcher (`train.launcher`) is
`accelerate launch --config_file configs/accelerate/<x>.yaml` (docs/gpu.md).
"""

import json

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.stage import In, Ins, Out, Text


def main(section: Text, data: Ins, base: In, out: Out, loss_csv: Out) -> None:
    run, lora = params.load(section), params.load("lora")
    config = run.config(params.load("train"))
    from empathy_pipeline.modeling.training import load_samples, train_lora  # heavy (torch): after the checks

    samples = load_samples(data, run.max_samples, config["seed"])
    print(f"{out}: {samples.height} samples from {', '.join(map(str, data))}")
    report = train_lora(base, samples, lora.model_dump(), config, out, loss_csv)
    print(json.dumps({"out": str(out), **report}))


if __name__ == "__main__":
    stage.run(main)
