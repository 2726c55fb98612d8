"""Synth-Empathy §3.4: judge the coherence, naturalness and empathy (1-3 each) of synthetic samples.

The paper scores the generated data before and after its quality and diversity selection with the
Figure 4 prompts (judge_chat) and reports the mean rising from 2.65 to 2.88, with more than
95% of the selected data at full marks. A reply without a readable score counts as unparseable, per
criterion, and stays out of the means.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.judges.ask import ask_until_parsed
from empathy_pipeline.llm.base import Chat, ChatBackend, Sampling, prompt_chat, transcript
from empathy_pipeline.llm.table import fingerprint, run_sharded

# ---- the prompt and its parser: Synth-Empathy: data-quality judge (paper §3.4, Figure 4) ---------
# Figure 4 gives the frame of the three G-Eval-style prompts (task, steps, "Evaluation Form (scores
# ONLY)") but its rubrics did not survive extraction; the criteria below are written by us. Each
# criterion is scored 1, 2 or 3 in its own request. The assistant turn is prefilled with the form
# line ("- Coherence:") so that even a 135M judge answers with a number.

JUDGE_SYSTEM_PROMPT = "You are a careful annotator of dialogues. You answer only with the filled-in evaluation form."

JUDGE_CRITERIA = {
    "coherence": (
        "Coherence (1-3) - does the response follow from the conversation history?\n"
        "- 1: the response ignores or contradicts what was said, or makes no sense after it.\n"
        "- 2: the response is related to the conversation but drifts, is vague or misses its main point.\n"
        "- 3: the response follows logically from the conversation and stays on its topic."
    ),
    "naturalness": (
        "Naturalness (1-3) - does the response sound like something a person would say?\n"
        "- 1: robotic, broken, repetitive or very awkward.\n"
        "- 2: mostly natural, with some awkward or unusual phrasing.\n"
        "- 3: a fluent reply a person could give in this conversation."
    ),
    "empathy": (
        "Empathy (1-3) - does the response understand and care about the speaker's feelings?\n"
        "- 1: ignores the speaker's feelings, or is dismissive or inappropriate.\n"
        "- 2: acknowledges the feelings, but in a generic or shallow way.\n"
        "- 3: clearly recognises how the speaker feels and responds with warmth and care."
    ),
}

_JUDGE_STEPS = {
    "coherence": (
        "1. Read the conversation between the two individuals.\n"
        "2. Read the potential response for the next turn in the conversation.\n"
        "3. Evaluate the response based on its coherence, using the provided criteria.\n"
        "4. Assign a rating score of 1, 2, or 3 based on the evaluation."
    ),
    "naturalness": (
        "1. Read the conversation between the two individuals.\n"
        "2. Read the potential response for the next turn in the conversation.\n"
        "3. Evaluate the response based on its naturalness, using the provided criteria.\n"
        "4. Assign a rating score of 1, 2, or 3 based on the evaluation."
    ),
    "empathy": (
        "1. Read the conversation history.\n"
        "2. Read the potential response.\n"
        "3. Evaluate the empathy of the response based on the conversation history.\n"
        "4. Assign a score of 1, 2, or 3 for empathy."
    ),
}

JUDGE_PROMPT = """You will be given a conversation between two individuals. You will then be given one potential response for the next turn in the conversation.

Your task is to rate the responses on one metric.

Please make sure you read and understand these instructions carefully. Please keep this document open while reviewing, and refer to it as needed.

Evaluation Criteria:

{criteria}

Evaluation Steps:

{steps}

Example:

Conversation History:
{conversation}

Response:

{response}

Evaluation Form (scores ONLY):
- {label}:"""


def judge_prefill(criterion: str) -> str:
    return f"- {criterion.capitalize()}:"


def judge_chat(criterion: str, context: Sequence[str], response: str) -> Chat:
    """Chat asking for one 1-3 score of `response` on `criterion` (coherence, naturalness or empathy)."""
    if criterion not in JUDGE_CRITERIA:
        raise PipelineError(f"judge: unknown criterion {criterion!r} (use {', '.join(JUDGE_CRITERIA)})")
    prompt = JUDGE_PROMPT.format(criteria=JUDGE_CRITERIA[criterion], steps=_JUDGE_STEPS[criterion],
                                 conversation=transcript(context), response=response, label=criterion.capitalize())
    return prompt_chat(JUDGE_SYSTEM_PROMPT, prompt, judge_prefill(criterion))


_JUDGE_NUMBER = r"(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?"


def parse_judge_score(reply: str, criterion: str) -> int | None:
    """The 1-3 score in a judge reply, or None when there is none (the caller counts those).

    The reply normally continues the prefilled "- Criterion:" line, so it starts with the number;
    a reply that restarts the form ("- Empathy: 2") is read by its label. "N/3" is accepted, other
    scales, fractions and numbers outside 1..3 are not.
    """
    if not reply:
        return None
    labelled = re.search(rf"\b{re.escape(criterion)}\w*\s*[*_]*\s*[:=]\s*[*_]*\s*" + _JUDGE_NUMBER, reply, re.IGNORECASE)
    match = labelled or re.match(r"[\s*_:=-]*" + _JUDGE_NUMBER + r"(?!\w)", reply)
    if match is None:
        return None
    number, scale = match.group(1), match.group(2)
    if (scale is not None and scale != "3") or "." in number:
        return None
    value = int(number)
    return value if 1 <= value <= 3 else None


CRITERIA = tuple(JUDGE_CRITERIA)
SCORES = (1, 2, 3)


JUDGED_SCHEMA = {"sample_id": pl.String,
                 **{f"{c}_reply": pl.String for c in CRITERIA}}


def before_and_after(generated: pl.DataFrame, selected: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The generated samples before selection, and the selected ones with their generated text
    (the selected table may carry only ids)."""
    ids = selected.select("sample_id")
    after = generated.join(ids, on="sample_id", how="semi", maintain_order="left")
    if after.height != ids.height:
        raise PipelineError(f"selection: {ids.height - after.height} sample_id(s) not among the generated samples "
                            "(rerun the selection stages)")
    return generated, after


def judge(samples: pl.DataFrame, backend: ChatBackend, max_new_tokens: int, *, shard_dir: str | Path,
          shard_size: int, settings: dict, seed: int = 0, retries: int = 0, retry_temperature: float = 0.7,
          show_progress: bool = True) -> tuple[pl.DataFrame, dict]:
    """One row per sample: sample_id, <criterion> (Int8, null when unparseable), <criterion>_reply;
    and the shard counts. Each criterion is asked greedily and, while its reply does not parse, again
    up to `retries` times at `retry_temperature` (judges/ask.py, every judge's rule). Resumable
    through llm/table.run_sharded."""
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    fp = fingerprint({"settings": settings, "sampling": sampling, "prompt": JUDGE_PROMPT, "criteria": JUDGE_CRITERIA,
                      # only when on: shards judged before retries existed asked once, as retries 0 does
                      **({"retries": retries, "retry_temperature": retry_temperature} if retries else {})},
                     samples, ("sample_id", "context", "response"))

    def work(part: pl.DataFrame, _: int) -> pl.DataFrame:
        pairs = part.select("context", "response").rows()
        columns = {"sample_id": part["sample_id"]}
        for criterion in CRITERIA:  # one criterion per call, as the paper's one prompt per criterion
            asked = ask_until_parsed(backend, [judge_chat(criterion, context, response) for context, response in pairs],
                                     [f"{sample_id}#{criterion}" for sample_id in part["sample_id"].to_list()],
                                     lambda reply, c=criterion: parse_judge_score(reply, c), sampling=sampling,
                                     retries=retries, retry_temperature=retry_temperature, what="judge_quality")
            columns[f"{criterion}_reply"] = asked.replies
        return pl.DataFrame(columns, schema=JUDGED_SCHEMA)

    replies, counts = run_sharded(samples, work, shard_dir=shard_dir, shard_size=shard_size, fingerprint=fp,
                                  schema=JUDGED_SCHEMA, what="judge_quality", show_progress=show_progress)
    scores = [pl.Series(c, [parse_judge_score(r, c) for r in replies[f"{c}_reply"].to_list()], dtype=pl.Int8)
              for c in CRITERIA]
    return replies.with_columns(scores), counts


def summarize(judged: pl.DataFrame, prefix: str) -> dict[str, float | int]:
    """Flat metrics: n, per criterion mean / % at each score / unparseable count, overall mean, % full marks."""
    out: dict[str, float | int] = {f"{prefix}_n": judged.height}
    means = []
    for criterion in CRITERIA:
        scores = judged[criterion].drop_nulls()
        mean = round(float(scores.mean()), 3) if scores.len() else None
        out[f"{prefix}_{criterion}_mean"] = mean
        for score in SCORES:
            share = 100 * int((scores == score).sum()) / scores.len() if scores.len() else 0.0
            out[f"{prefix}_{criterion}_score{score}_pct"] = round(share, 2)
        out[f"{prefix}_{criterion}_unparseable"] = judged.height - scores.len()
        if mean is not None:
            means.append(mean)
    out[f"{prefix}_mean"] = round(sum(means) / len(means), 3) if means else None
    complete = judged.drop_nulls(list(CRITERIA))
    full = complete.filter(pl.all_horizontal(pl.col(c) == 3 for c in CRITERIA)).height
    out[f"{prefix}_full_marks_pct"] = round(100 * full / complete.height, 2) if complete.height else 0.0
    return out
