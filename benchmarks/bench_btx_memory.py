"""Peak RAM of merge.btx_merge against model size, extrapolated to two Llama-3-8B experts.

btx_merge streams: it reads the base checkpoint one tensor at a time, merges each expert's LoRA
update into that tensor in float32, and writes the Mixtral checkpoint shard by shard. What it holds
is the shard being filled (up to merge.MAX_SHARD_SIZE) plus the float32 working copies of the one
tensor being made; the largest is the embedding (or lm_head), averaged whole. So its peak above
the imports should be
    peak ≈ c0 + shard held + k · (elements of the largest tensor),
flat in the number of layers. Measured here on SmolLM2-135M (the embedded model, its own weights),
the same shape with 15 and 60 layers, and the same depth scaled in width (hidden 1152 with 8 layers,
2304 with 4; random weights: memory does not depend on the values), each with two random LoRA
adapters (r 8, all seven projections, as the paper's); each merge in a fresh process with its
peak-RSS mark reset after the imports, once with the default shards (every output here fits one
shard, so the whole output is held) and once with shards small enough to hold next to nothing.
The small-shard runs fit c0 and k; Llama-3-8B's largest tensor is its embedding (and its untied
lm_head), 128,256 × 4,096, and its output (27 GB) fills whole default shards, so the prediction adds
a full shard and the two adapters (small here, 168 MB in float32 for r 8 at 8B): an upper bound.

Writes benchmarks/results/btx_memory.json. About 5 minutes on 2 cores:
    python benchmarks/bench_btx_memory.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_kcenter import _status_kb  # same /proc/self/status reader

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "btx_memory.json"
EMBEDDED = ROOT / ".cache" / "test-models" / "smollm2-135m-instruct"  # what tests/conftest.py materialises
SHAPES = ((576, 15), (576, 30), (576, 60), (1152, 8), (2304, 4))  # (hidden, layers); (576, 30) = SmolLM2-135M
SMALL_SHARDS = "32MB"
LLAMA3_8B_PARAMETERS = 8_030_261_248
LLAMA3_8B_LARGEST_TENSOR = 128_256 * 4_096  # embed_tokens and lm_head
LLAMA3_8B_LORA_PARAMETERS = 20_971_520  # one r-8 adapter on all seven projections (docs/gpu.md)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The whole-model merge this one replaced (PEFT merge_and_unload of both experts in float32), as
# this benchmark measured it on the first three shapes.
WHOLE_MODEL_MERGE = {"bytes_per_dense_parameter": 14.8, "llama3_8b_predicted_peak_rss_gib": 111.0}


def dense_model(hidden: int, layers: int, out: Path) -> Path:
    """SmolLM2-135M's architecture at `hidden` width (head dim 64, 3 query heads a KV head) and
    `layers` layers, in bfloat16 as models/efficient_base is stored."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(EMBEDDED)
    if (hidden, layers) == (config.hidden_size, config.num_hidden_layers):
        model = AutoModelForCausalLM.from_pretrained(EMBEDDED, dtype=torch.bfloat16)
    else:
        config.num_hidden_layers = layers
        config.hidden_size, config.intermediate_size = hidden, hidden * 8 // 3
        config.num_attention_heads, config.num_key_value_heads = hidden // 64, hidden // 192
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(EMBEDDED).save_pretrained(out)
    return out


def lora_adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter whose B is not zero (init_lora_weights=False), so merging it changes weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=LORA_TARGETS,
                                     init_lora_weights=False)).save_pretrained(out)
    return out


def child(base: str, adapter_s: str, adapter_r: str, out: str, max_shard_size: str) -> dict:
    """One merge in this fresh process: peak RSS above the imports, and the sizes that explain it."""
    # btx_merge's imports too, so that the peak holds the merge, not the loading of modules
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, MixtralForCausalLM  # noqa: F401

    from empathy_pipeline.efficient_empathy.merge import btx_merge

    torch.set_num_threads(2)
    with torch.device("meta"):
        dense = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
    rss_before = _status_kb("VmRSS") * 1024
    started = time.perf_counter()
    report = btx_merge(base, adapter_s, adapter_r, out, router_seed=0, dtype="bfloat16",
                       max_shard_size=max_shard_size)
    shards = [p.stat().st_size for p in Path(out).glob("*.safetensors")]
    return {"max_shard_size": max_shard_size,
            "dense_parameters": sum(p.numel() for p in dense.parameters()),
            "largest_tensor_elements": max(p.numel() for p in dense.parameters()),
            "moe_parameters": report["parameters"], "output_bytes": sum(shards), "largest_shard_bytes": max(shards),
            "rss_before_bytes": rss_before, "peak_rss_bytes": _status_kb("VmHWM") * 1024,
            "seconds": round(time.perf_counter() - started, 1)}


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y on x."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - slope * mx, slope


def main() -> None:
    from huggingface_hub.serialization._base import parse_size_to_int

    from empathy_pipeline.efficient_empathy.merge import MAX_SHARD_SIZE

    if not (EMBEDDED / "config.json").is_file():
        sys.exit(f"{EMBEDDED}: missing; run the test suite's merge tests once (tests/conftest.py makes it)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden, layers in SHAPES:
            work = Path(tmp) / f"h{hidden}-l{layers}"
            base = dense_model(hidden, layers, work / "base")
            adapters = [lora_adapter(base, work / f"a{i}", i) for i in range(2)]
            for shards in (MAX_SHARD_SIZE, SMALL_SHARDS):
                run = subprocess.run([sys.executable, __file__, "--child", str(base), *map(str, adapters),
                                      str(work / "moe"), shards], capture_output=True, text=True, check=True)
                row = {"hidden": hidden, "layers": layers, **json.loads(run.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(row, flush=True)
                shutil.rmtree(work / "moe")
            shutil.rmtree(work)

    def above(row: dict) -> int:  # the peak above the imports is what the merge itself holds
        return row["peak_rss_bytes"] - row["rss_before_bytes"]

    default = [r for r in rows if r["max_shard_size"] == MAX_SHARD_SIZE]
    small = [r for r in rows if r["max_shard_size"] == SMALL_SHARDS]
    # The old measure, for comparison: slope over the depth sweep with the default shards, which here
    # hold the whole output; it stops growing once the output passes one shard.
    _, per_dense_parameter = fit([(r["dense_parameters"], above(r)) for r in default if r["hidden"] == 576])
    c0, per_element = fit([(r["largest_tensor_elements"], above(r)) for r in small])
    imports = sum(r["rss_before_bytes"] for r in rows) / len(rows)
    # A bound: the largest tensor made beside a full shard, and both adapters in float32 throughout.
    predicted = (imports + c0 + per_element * LLAMA3_8B_LARGEST_TENSOR + parse_size_to_int(MAX_SHARD_SIZE)
                 + 2 * 4 * LLAMA3_8B_LORA_PARAMETERS)
    result = {
        "what": "merge.btx_merge (streamed) peak RSS vs model size (two LoRA experts -> 2-expert Mixtral, bf16 out)",
        "runs": rows,
        "bytes_per_dense_parameter": round(per_dense_parameter, 2),
        "bytes_per_largest_tensor_element": round(per_element, 2),
        "intercept_bytes": round(c0),
        "imports_rss_bytes": round(imports),
        "max_shard_size": MAX_SHARD_SIZE,
        "llama3_8b_dense_parameters": LLAMA3_8B_PARAMETERS,
        "llama3_8b_largest_tensor_elements": LLAMA3_8B_LARGEST_TENSOR,
        "llama3_8b_predicted_peak_rss_gib": round(predicted / 2**30, 1),
        "whole_model_merge": WHOLE_MODEL_MERGE,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(*sys.argv[2:7])))
    else:
        main()
