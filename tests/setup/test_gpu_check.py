"""tools/check_gpu.py, `make check-gpu`: the GPU path checked on a CPU.

The fast tests run the checker's readers on small hand-written sources. The slow ones use what
`make check-gpu-cache` downloads once (the locked vllm wheel, the deepspeed check venv, uv's
metadata cache; network only the first time) and then run offline: the project passes, a vllm
with one engine argument renamed fails naming it, and an invalid ZeRO config fails DeepSpeed's
own validation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import check_gpu  # noqa: E402

LOCK = ROOT / "requirements" / "gpu.lock"
DIST = ROOT / ".cache" / "gpucheck-dist"
CHECK_PYTHON = ROOT / ".cache" / "gpucheck-venv" / "bin" / "python"

# A vllm in miniature, laid out as the real one: LLM forwards **kwargs into the EngineArgs
# dataclass, refuses data_parallel_size > 1 in one process; SamplingParams/LoRARequest are Structs.
MINI_VLLM = {
    "vllm/__init__.py": 'MODULE_ATTRS = {"LLM": ".entrypoints.llm:LLM", "SamplingParams": ".sampling_params:SamplingParams"}\n',
    "vllm/entrypoints/llm.py": (
        "from vllm.engine.arg_utils import EngineArgs\n"
        "class LLM:\n"
        "    def __init__(self, model, *, tensor_parallel_size=1, **kwargs):\n"
        "        dp = int(kwargs.get('data_parallel_size', 1))\n"
        "        if dp > 1:\n"
        "            raise ValueError(f'LLM(data_parallel_size={dp}) is not supported')\n"
        "        self.args = EngineArgs(model=model, **kwargs)\n"
        "    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None):\n"
        "        pass\n"
    ),
    "vllm/engine/arg_utils.py": (
        "from dataclasses import dataclass, field\n"
        "@dataclass\n"
        "class EngineArgs:\n"
        "    model: str = ''\n"
        "    max_lora_rank: int = 16\n"
        "    data_parallel_size: int = 1\n"
        "    internal: int = field(default=0, init=False)\n"
    ),
    "vllm/sampling_params.py": (
        "import msgspec\n"
        "class SamplingParams(msgspec.Struct):\n"
        "    max_tokens: int = 16\n"
        "    seed: int | None = None\n"
    ),
    "vllm/lora/request.py": (
        "import msgspec\n"
        "class LoRARequest(msgspec.Struct):\n"
        "    lora_name: str\n"
        "    lora_int_id: int\n"
        "    lora_path: str = ''\n"
    ),
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(text)
    return root


def project(tmp_path: Path, code: str) -> Path:
    return write_tree(tmp_path / "src", {"pkg/backend.py": code})


def problems_for(tmp_path: Path, code: str, vllm_files: dict[str, str] = MINI_VLLM) -> list[str]:
    source = check_gpu.VllmSource(write_tree(tmp_path / "vllm-src", vllm_files))
    return check_gpu.vllm_api_problems(source, "mini", project(tmp_path, code))[0]


GOOD_CALLS = """
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest

class Backend:
    def __init__(self, model, rank):
        kwargs: dict = dict(model=model, tensor_parallel_size=2)
        kwargs["max_lora_rank"] = rank
        self.lora = LoRARequest("adapter", 1, "/adapter")
        self.llm = LLM(**kwargs)

    def generate(self, chats):
        params = [SamplingParams(max_tokens=8, seed=1)]
        return self.llm.chat(chats, params, use_tqdm=False, lora_request=self.lora)
"""


def test_calls_that_match_pass_and_every_kind_of_call_is_seen(tmp_path):
    source = check_gpu.VllmSource(write_tree(tmp_path / "vllm-src", MINI_VLLM))
    problems, calls = check_gpu.vllm_api_problems(source, "mini", project(tmp_path, GOOD_CALLS))
    assert problems == []
    seen = {c.symbol: sorted(a.name for a in c.keywords) for c in calls}
    assert seen == {
        "vllm.LLM": ["max_lora_rank", "model", "tensor_parallel_size"],  # from dict(...) and kwargs[...] =
        "vllm.lora.request.LoRARequest": [],
        "vllm.SamplingParams": ["max_tokens", "seed"],
        "vllm.LLM.chat": ["lora_request", "use_tqdm"],  # a method of the object LLM(...) made
    }


@pytest.mark.parametrize(("edit", "expected"), [
    (("kwargs[\"max_lora_rank\"] = rank", "kwargs[\"max_lora_ranks\"] = rank"), ":8: LLM(max_lora_ranks=...) is not an argument"),
    (("SamplingParams(max_tokens=8", "SamplingParams(max_new_tokens=8"), "SamplingParams(max_new_tokens=...)"),
    (("use_tqdm=False", "progress=False"), "chat(progress=...)"),
    (('LoRARequest("adapter", 1, "/adapter")', 'LoRARequest("adapter", 1, "/adapter", "base", 2)'),
     "LoRARequest() takes 3 positional argument(s) in vllm mini, the project passes 5"),
    (("kwargs: dict = dict(model=model, tensor_parallel_size=2)", "kwargs: dict = dict(model=model, **extra)"),
     "LLM(**kwargs): cannot tell which arguments it passes"),
    (('kwargs["max_lora_rank"] = rank', 'kwargs.update(data_parallel_size=2)'),
     "LLM(data_parallel_size=...) is refused by vllm mini for values other than its default"),
])
def test_a_call_the_locked_vllm_does_not_take_is_one_line_naming_file_line_and_argument(tmp_path, edit, expected):
    code = GOOD_CALLS.replace(*edit)
    assert code != GOOD_CALLS
    problems = problems_for(tmp_path, code)
    assert len(problems) == 1 and expected in problems[0], problems
    assert problems[0].startswith(str(tmp_path / "src" / "pkg" / "backend.py"))


def test_an_init_false_field_is_not_an_argument(tmp_path):
    problems = problems_for(tmp_path, GOOD_CALLS.replace('kwargs["max_lora_rank"] = rank', 'kwargs["internal"] = 1'))
    assert len(problems) == 1 and "LLM(internal=...)" in problems[0]


def test_the_lora_rank_list_must_be_the_locked_vllms(tmp_path):
    ranks = {**MINI_VLLM, "vllm/config/lora.py": "from typing import Literal\nMaxLoRARanks = Literal[1, 8, 16]\n"}
    source = check_gpu.VllmSource(write_tree(tmp_path / "vllm-src", ranks))
    same = project(tmp_path / "a", "VLLM_MAX_LORA_RANKS = (1, 8, 16)\n")
    assert check_gpu.lora_rank_problems(source, "mini", same)[0] == []
    other = project(tmp_path / "b", "x = 1\nVLLM_MAX_LORA_RANKS = (1, 8, 16, 32)\n")
    (problem,) = check_gpu.lora_rank_problems(source, "mini", other)[0]
    assert problem.endswith("pkg/backend.py:2: VLLM_MAX_LORA_RANKS = (1, 8, 16, 32), but vllm mini takes "
                            "max_lora_rank in (1, 8, 16) (vllm/config/lora.py MaxLoRARanks)")


def test_a_stale_lock_is_one_line_naming_what_differs(tmp_path):
    lock = tmp_path / "gpu.lock"
    resolved = tmp_path / "resolved.lock"
    lock.write_text("a==1.0 \\\n    --hash=sha256:00\n    # via b\nb==2.0 \\\n    --hash=sha256:11\n")
    resolved.write_text("a==1.1 \\\n    --hash=sha256:22\n    # via b\nc==3.0 \\\n    --hash=sha256:33\n")
    assert check_gpu.stale_lock_problems(lock, lock) == []
    [line] = check_gpu.stale_lock_problems(lock, resolved)
    assert "a 1.0 -> 1.1" in line and "c 3.0 missing" in line and "b 2.0 no longer required" in line
    assert line.endswith("run `make lock-gpu`")


def test_the_check_venv_gets_deepspeeds_closure_without_cuda():
    pins = check_gpu.parse_lock(LOCK.read_text())
    chosen = {p.name for p in check_gpu.closure(pins, ["deepspeed", "accelerate"])}
    assert {"deepspeed", "accelerate", "hjson", "pydantic", "torch"} <= chosen
    lines = check_gpu.sublock(LOCK, [], ["deepspeed", "accelerate"])
    names = {line.split("==")[0] for line in lines.splitlines() if "==" in line}
    assert "deepspeed" in names and "torch" not in names and not any(n.startswith("nvidia-") for n in names)
    assert lines.count("--hash=sha256:") >= len(names)  # pip --require-hashes takes it


def test_the_gpu_lock_differs_from_the_cpu_lock_only_where_vllm_forces_it():
    cpu = {n: p.version for n, p in check_gpu.parse_lock((ROOT / "requirements" / "cpu.lock").read_text()).items()}
    gpu = {n: p.version for n, p in check_gpu.parse_lock(LOCK.read_text()).items()}
    assert set(cpu) <= set(gpu)
    assert {n for n in cpu if cpu[n] != gpu[n]} == {"torch", "transformers", "numpy"}
    assert gpu["vllm"] == "0.33.0" and not gpu["torch"].endswith("+cpu")


# ---- slow: the real wheel, deepspeed and the Makefile ---------------------------------------------

@pytest.fixture(scope="session")
def gpu_check_cache() -> None:
    """What `make check-gpu` downloads, once (network only when .cache is cold)."""
    run = subprocess.run(["make", "-s", "check-gpu-cache"], cwd=ROOT, capture_output=True, text=True)
    if run.returncode:
        pytest.fail(f"make check-gpu-cache failed: {run.stderr.strip().splitlines()[-1:]}")


def check_gpu_all(*extra: str) -> subprocess.CompletedProcess:
    resolved = ROOT / ".cache" / "lock-gpu-venv" / "gpu.resolved"
    return subprocess.run([sys.executable, str(ROOT / "tools" / "check_gpu.py"), "all", "--lock", str(LOCK),
                           "--resolved", str(resolved), "--dist-dir", str(DIST),
                           "--deepspeed-python", str(CHECK_PYTHON), *extra],
                          cwd=ROOT, capture_output=True, text=True)


@pytest.mark.slow
def test_make_check_gpu_passes_on_the_project(gpu_check_cache):
    run = subprocess.run(["make", "-s", "check-gpu", "GPU_UV_FLAGS=--offline"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "ok: requirements/gpu.lock matches its inputs" in run.stdout
    assert "ok: configs/accelerate/ds_zero3.json (ZeRO stage 3 on 8 GPUs)" in run.stdout


@pytest.mark.slow
def test_a_renamed_engine_argument_in_the_locked_vllm_fails_the_check(gpu_check_cache, tmp_path):
    version, wheel = check_gpu.locked_vllm(LOCK, DIST)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path, [n for n in zf.namelist() if n.startswith("vllm/") and n.endswith(".py")])
    arg_utils = tmp_path / "vllm" / "engine" / "arg_utils.py"
    text = arg_utils.read_text()
    assert text.count("    max_lora_rank: ") == 1
    arg_utils.write_text(text.replace("    max_lora_rank: ", "    max_lora_rank_x: "))

    run = check_gpu_all("--vllm-source", str(tmp_path))
    assert run.returncode == 1
    [line] = [x for x in run.stderr.splitlines() if "max_lora_rank" in x]
    assert line.startswith("src/empathy_pipeline/llm/vllm.py:")
    assert f"LLM(max_lora_rank=...) is not an argument of vllm {version}" in line
    assert "vllm/entrypoints/llm.py" in line and "vllm/engine/arg_utils.py" in line


@pytest.mark.slow
@pytest.mark.parametrize(("zero", "expected"), [
    ({"stage": 7}, "DeepSpeedZeroConfig.stage: Input should be 0, 1, 2, 3 or 3 (got 7)"),
    ({"stage3_max_live_paramters": 1e9}, "DeepSpeedZeroConfig.stage3_max_live_paramters: Extra inputs are not permitted"),
])
def test_an_invalid_zero_config_fails_deepspeeds_own_validation(gpu_check_cache, tmp_path, zero, expected):
    configs = tmp_path / "accelerate"
    shutil.copytree(ROOT / "configs" / "accelerate", configs)
    ds_json = configs / "ds_zero3.json"
    config = json.loads(ds_json.read_text())
    config["zero_optimization"].update(zero)
    ds_json.write_text(json.dumps(config))
    yaml_file = configs / "deepspeed_zero3.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("configs/accelerate/ds_zero3.json", str(ds_json)))

    problems, _ = check_gpu.run_deepspeed_check(CHECK_PYTHON, configs)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{ds_json}: deepspeed ") and expected in problems[0], problems
