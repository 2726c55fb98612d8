"""params.yaml as typed, validated objects: one pydantic model per section, checked before any work.

A stage asks for its sections (`params.load("quality")`) and gets a frozen object whose fields
have the types and ranges below; a wrong type, an out-of-range value, an unknown backend or a
typo'd key (`quality.treshold`) fails in well under a second with one line per problem naming the
key, the value and what is allowed. `empathy check` validates every section at once.
Values are validated strictly: YAML already types them, so "60" (a string) is not a threshold.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from empathy_pipeline.core.errors import PipelineError

PARAMS_FILE = Path("params.yaml")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]          # ratios and fractions: (0, 1]
Temperature = Annotated[float, Field(ge=0)]
Dtype = Literal["float32", "bfloat16", "float16"]
SplitName = Literal["train", "valid", "test"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Models(Section):
    # Each branch fine-tunes its own base (embedded GGUF name, hub id or local HF directory):
    # Synth-Empathy's headline model is Qwen1.5-7B-Chat, Efficient-Empathy's Llama-3-8B-Instruct.
    synth_base: str
    efficient_base: str
    dtype: Dtype = "bfloat16"
    embedding: str
    # The encode prompt of the embedding model: a name from its prompts (gte-Qwen2's "query") or a
    # literal prefix; null = none.
    embedding_prompt: str | None = None
    # Run code shipped with a hub model (gte-Qwen2-7B-instruct needs it). A security choice: off
    # unless a profile that needs it says so.
    trust_remote_code: bool = False


class Llm(Section):
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    batch_size: PositiveInt = 16
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    tensor_parallel_size: PositiveInt = 1
    gpu_memory_utilization: Fraction = 0.9
    max_model_len: PositiveInt | None = None
    # vllm only: skip torch.compile/CUDA graphs; on CPU the first compile takes minutes.
    enforce_eager: bool = True
    base_url_env: str = "OPENAI_BASE_URL"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: PositiveInt = 8
    max_retries: NonNegativeInt = 3
    timeout: Annotated[float, Field(gt=0)] = 60


class MaxConversations(Section):
    train: PositiveInt | None = None
    valid: PositiveInt | None = None
    test: PositiveInt | None = None


class Prepare(Section):
    source: str
    format: Literal["ed_csv", "paper_json"] = "ed_csv"
    splits: list[SplitName] = ["train", "valid", "test"]
    preprocess: Literal["paper", "none"] = "paper"
    max_conversations: MaxConversations = MaxConversations()
    max_bad_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        if not Path(value).is_dir():
            raise ValueError("no such directory; run `empathy data fetch` or point it at the ED files")
        return value


class Evaluate(Section):
    max_samples: PositiveInt | None = None
    max_new_tokens: PositiveInt = 40
    seed: int = 0
    shard_size: PositiveInt = 256
    normalize_predictions: Literal["paper", "none"] = "paper"
    bertscore: bool = True
    bertscore_model: str = "all-minilm-l6-v2"
    bertscore_num_layers: PositiveInt | None = None
    bertscore_batch_size: PositiveInt = 64
    # bert-score's baseline rescaling, (raw - b) / (1 - b): the papers' BERT columns (~19 F1) are on
    # this scale, raw roberta-large F1 is ~85. The baseline is the file bert-score ships for the
    # model (roberta-large among them), or bertscore_baseline (a tsv of LAYER,P,R,F).
    bertscore_rescale: bool = False
    bertscore_baseline: str | None = None


class LlmStage(Section):
    """A stage that asks a model about every row, in resumable shards (llm/table.py)."""

    max_new_tokens: PositiveInt
    shard_size: PositiveInt
    seed: int = 0


class SampledLlmStage(LlmStage):
    """One that samples its replies (greedy at temperature 0)."""

    max_new_tokens: PositiveInt = 40
    temperature: Temperature = 0.0
    top_p: Fraction = 1.0
    shard_size: PositiveInt = 256


class SynthempathyRecipe(Section):
    """generate.synthempathy: the SYNTHEMPATHY recipe (synthempathy.py), read when generate.recipe is synthempathy."""

    stories_per_situation: PositiveInt = 2
    story_max_new_tokens: PositiveInt = 96
    explanation_max_new_tokens: PositiveInt = 96
    response_max_new_tokens: PositiveInt = 64
    # MinHash LSH over word shingles: a story whose estimated Jaccard with an earlier one reaches
    # the threshold is dropped. Exclusive of 1: datasketch's banding needs two bands at least.
    dedupe_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    shingle_words: PositiveInt = 3
    num_perm: Annotated[int, Field(ge=16, le=1024)] = 128
    min_words: PositiveInt = 8      # every kept story, explanation and response has this many words ...
    max_words: PositiveInt = 150    # ... and at most this many
    profanity_filter: bool = True   # drop explanations and responses that better-profanity flags
    # EPITOME floor: `sum` = ER + IP + EX (0-6), or one mechanism's level (0-2); null = no floor.
    epitome_measure: Literal["sum", "ER", "IP", "EX"] = "sum"
    epitome_floor: NonNegativeInt | None = None

    @field_validator("max_words")
    @classmethod
    def _length_range(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_words")
        if low is not None and value < low:
            raise ValueError(f"below min_words ({low}): no text could be kept")
        return value

    @field_validator("epitome_floor")
    @classmethod
    def _reachable_floor(cls, value: int | None, info: ValidationInfo) -> int | None:
        measure = info.data.get("epitome_measure")
        top, what = (6, "ER + IP + EX") if measure == "sum" else (2, f"{measure} level")
        if value is not None and value > top:
            raise ValueError(f"above {top}, the highest {what}: nothing could be kept")
        return value


class Generate(SampledLlmStage):
    # synth_empathy: Synth-Empathy's multi-round prompts (generation.py, the keys below down to
    # max_response_words); synthempathy: the SYNTHEMPATHY corpus recipe (synthempathy.py, `synthempathy`).
    recipe: Literal["synth_empathy", "synthempathy"] = "synth_empathy"
    model: str = "base"             # base = the branch's base model; else a hub id, path or served model name
    prompt_variant: Literal[1, 2] = 2
    # synth_empathy: ED train samples; synthempathy: ED situations (one per conversation).
    num_seeds: Annotated[PositiveInt | Fraction, Field(description="a whole count >= 1 or a fraction in (0, 1]")]
    completions_per_seed: PositiveInt = 1
    max_response_words: PositiveInt = 30
    synthempathy: SynthempathyRecipe = SynthempathyRecipe()


class Lora(Section):
    r: PositiveInt = 8
    alpha: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    target_modules: Annotated[list[str], Field(min_length=1)]


class Train(Section):
    max_steps: Annotated[int, Field(ge=-1)] = -1   # > 0 caps steps; -1 = `epochs` full epochs
    epochs: Annotated[float, Field(gt=0)] = 1
    learning_rate: Annotated[float, Field(gt=0)] = 2e-4
    batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    max_length: PositiveInt = 512
    bf16: bool = False
    # Off unless activations would not fit: recomputing them in the backward costs about a third more compute.
    gradient_checkpointing: bool = False
    logging_steps: PositiveInt = 1
    save_steps: PositiveInt = 500
    seed: int = 0
    launcher: str = "python"

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 trains nothing; use a positive cap or -1 for full epochs")
        return value


class TrainRun(Section):
    """A fine-tuning run's own section: which samples, and any `train` key it overrides."""

    max_samples: PositiveInt | None = None
    max_steps: Annotated[int, Field(ge=-1)] | None = None
    epochs: Annotated[float, Field(gt=0)] | None = None
    learning_rate: Annotated[float, Field(gt=0)] | None = None
    batch_size: PositiveInt | None = None
    gradient_accumulation_steps: PositiveInt | None = None
    max_length: PositiveInt | None = None
    bf16: bool | None = None
    seed: int | None = None

    def config(self, train: Train) -> dict[str, Any]:
        """The shared `train` settings with this run's overrides applied."""
        overrides = self.model_dump(exclude={"max_samples"}, exclude_none=True)
        return {**train.model_dump(), **overrides}


class Discriminate(SampledLlmStage):
    pass


class Embed(Section):
    batch_size: PositiveInt = 64
    dtype: Literal["float32", "float16"] = "float32"


class Quality(Section):
    # S = 100 * cos(E_D, E_G) lies in [-100, 100]; keep S > threshold (-100 keeps every sample: the
    # "without quality selection" ablation of Synth-Empathy Table 3).
    threshold: Annotated[float, Field(ge=-100, le=100)]


class Diversity(Section):
    # kcenter: K-Center-Greedy (Synth-Empathy §3.3); random: a seeded uniform subset of the same size
    # (the "without diversity selection" ablation of Synth-Empathy Table 4).
    method: Literal["kcenter", "random"] = "kcenter"
    k: PositiveInt | None = None
    ratio: Fraction | None = 0.9
    seed: int = 0
    device: str = "cpu"

    @model_validator(mode="after")
    def _size(self):
        if self.k is None and self.ratio is None:
            raise ValueError("k and ratio are both null; set k (a count) or ratio (a fraction in (0, 1])")
        return self


class JudgeStage(LlmStage):
    """One whose judge model scores samples greedily; a reply that does not parse is asked again up to
    `retries` times, sampled at `retry_temperature` (judges/ask.py)."""

    model: str = "base"             # base = the branch's base model; else a hub id, path or served model name
    max_new_tokens: PositiveInt = 24
    shard_size: PositiveInt = 64
    retries: NonNegativeInt = 1
    retry_temperature: Temperature = 0.7


class JudgeQuality(JudgeStage):
    sample_size: PositiveInt | None = None
    retries: NonNegativeInt = 0     # Synth-Empathy §3.4 asks each criterion once


class Rate(JudgeStage):
    # The prepared split this branch rates, splits and trains its experts on: train (the paper) or
    # valid (the only split besides test whose ChatGPT ratings the authors released).
    pool: Literal["train", "valid"] = "train"
    max_samples: PositiveInt | None = None
    prefill: bool = True
    import_file: str | None = None  # ratings in the authors' JSON format: skip the judge

    @field_validator("import_file")
    @classmethod
    def _import_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("no such file; null runs the judge instead")
        return value


class Split(Section):
    threshold: Annotated[float, Field(ge=0, le=10)]  # ratings are 0-10


class Experts(Section):
    """The split set (data/split/<set>.parquet) each Efficient-Empathy expert is trained on.

    The paper trains sensibility on the sensibility set and rationality on the rationality set. The
    other values are its baselines and ablations: `all` = every rated sample (Full F.T., Table 2),
    `discard` as the rationality expert = Table 6 struc-(b).
    """

    sensibility: Literal["sensibility", "rationality", "discard", "all"] = "sensibility"
    rationality: Literal["sensibility", "rationality", "discard", "all"] = "rationality"


class BtxMerge(Section):
    router_seed: int = 0
    # trained: the rationality expert as trained; base: the base model in its place (EE Table 6 struc-(a)).
    rationality_expert: Literal["trained", "base"] = "trained"


class Epitome(Section):
    # The EPITOME Reddit CSVs (Sharma et al., 2020): the demo's hand-written sample in data/sample, or the
    # real release (`empathy data fetch epitome`, or ../shared beside the repo), never committed.
    # Existence is checked by the stage (one line), so `empathy check` passes where they are absent.
    source: str
    held_out_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 0
    method: Literal["frozen_head", "fine_tune"] = "frozen_head"
    encoder: str = "all-minilm-l6-v2"
    c: Annotated[float, Field(gt=0)] = 1.0          # frozen_head: inverse L2 strength of each logistic head
    batch_size: PositiveInt = 64                     # encode batch
    epochs: PositiveInt = 2                          # fine_tune only
    learning_rate: Annotated[float, Field(gt=0)] = 4e-5  # fine_tune only


SECTIONS: dict[str, type[Section]] = {
    "models": Models, "llm": Llm, "prepare": Prepare, "evaluate": Evaluate,
    "generate": Generate, "lora": Lora, "train": Train, "train_discriminator": TrainRun,
    "discriminate": Discriminate, "embed": Embed, "quality": Quality, "diversity": Diversity,
    "train_synth": TrainRun, "judge_quality": JudgeQuality,
    "rate": Rate, "split": Split, "experts": Experts, "train_expert": TrainRun, "btx_merge": BtxMerge, "train_router": TrainRun,
    "epitome": Epitome,
}
TOP_LEVEL_SCALARS = {"profile"}  # the name of the profile params.yaml was last switched to


def read(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise PipelineError(f"{p}: params file not found (run from the project root)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PipelineError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{p}: expected a mapping of sections")
    return data


def _problems(name: str, model: type[Section], raw: Any, path: Path) -> list[str]:
    if not isinstance(raw, dict):
        return [f"{path} {name}: expected a section of keys, got {raw!r}"]
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        # A union field fails once per member: one line per key, its messages joined.
        by_key: dict[tuple, list[dict]] = {}
        for err in exc.errors():
            keys = tuple(str(part) for part in err["loc"] if not _is_type_tag(part))
            by_key.setdefault(keys, []).append(err)
        return _typos(name, by_key, path) + [_line(name, model, raw, keys, errs, path)
                                             for keys, errs in by_key.items()]
    return []


def _typos(name: str, by_key: dict[tuple, list[dict]], path: Path) -> list[str]:
    """An unknown key that is a near miss of a missing one is a typo: one line saying so (and the
    'missing' line for the real key goes)."""
    unknown = [k for k, errs in by_key.items() if errs[0]["type"] == "extra_forbidden"]
    missing = [k for k, errs in by_key.items() if errs[0]["type"] == "missing"]
    lines = []
    for typo in unknown:
        candidates = [m for m in missing if m[:-1] == typo[:-1]]
        match = difflib.get_close_matches(typo[-1], [m[-1] for m in candidates], n=1)
        if match:
            real = (*typo[:-1], match[0])
            lines.append(f"{path} {'.'.join([name, *typo])}: unknown key (did you mean {'.'.join([name, *real])}?)")
            del by_key[typo], by_key[real]
            missing.remove(real)
    return lines


def _line(name: str, model: type[Section], raw: dict, keys: tuple, errs: list[dict], path: Path) -> str:
    dotted = ".".join([name, *keys])
    first = errs[0]
    if not keys:  # a rule across keys of the section
        return f"{path} {name}: {first['msg'].removeprefix('Value error, ')}"
    owner, field = _field(model, keys)
    if first["type"] == "extra_forbidden":
        return f"{path} {dotted}: unknown key (known keys: {', '.join(owner.model_fields)})"
    if first["type"] == "missing":
        return f"{path} {dotted}: missing (required)"
    value: Any = raw
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else value
    allowed = (field.description if field is not None and field.description else
               " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errs)))
    return f"{path} {dotted}: {value!r} is not allowed ({allowed})"


def _field(model: type[BaseModel], keys: tuple):
    """(the model that owns the last key, its FieldInfo or None) along a nested key path."""
    owner, field = model, None
    for key in keys:
        field = owner.model_fields.get(key)
        if field is None:
            return owner, None
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and key != keys[-1]:
            owner = sub
    return owner, field


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in {"int", "float", "bool", "str", "list[str]", "none"}
                                      or part.startswith(("constrained-", "literal[", "function-")))


def check(path: str | Path = PARAMS_FILE) -> list[str]:
    """Every problem of every section (and unknown or missing sections), one line each."""
    path = Path(path)
    data = read(path)
    problems = [f"{path} {name}: unknown section (known: {', '.join(SECTIONS)})"
                for name in data if name not in SECTIONS and name not in TOP_LEVEL_SCALARS]
    for name, model in SECTIONS.items():
        if name not in data:
            problems.append(f"{path} {name}: section missing")
        else:
            problems.extend(_problems(name, model, data[name], path))
    return problems


def load(name: str, path: str | Path = PARAMS_FILE):
    """The validated section `name`; any problem is a PipelineError listing each bad key."""
    path = Path(path)
    data = read(path)
    if name not in SECTIONS or name not in data:
        raise PipelineError(f"{path}: no section {name!r}")
    problems = _problems(name, SECTIONS[name], data[name], path)
    if problems:
        raise PipelineError("; ".join(problems))
    return SECTIONS[name].model_validate(data[name])
