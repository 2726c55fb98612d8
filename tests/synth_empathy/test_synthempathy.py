"""The SYNTHEMPATHY recipe (generate.recipe: synthempathy): parsers, MinHash dedupe, filters and their
counted rejects, and the generate stage on the embedded SmolLM2, killed and resumed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from dvc_spec import ROOT, STAGES, command
from hypothesis import given, settings
from hypothesis import strategies as st
from killing import Counting, KillAfterShards, Killed
from stagerun import run_stage

from empathy_pipeline.core import params
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data import ed
from empathy_pipeline.llm.backends import load_backend
from empathy_pipeline.llm.base import request_seed
from empathy_pipeline.synth_empathy import dedupe, generation, synthempathy

SAMPLE = ROOT / "data" / "sample" / "empatheticdialogues"


# ---- parsers ------------------------------------------------------------------------------------

def test_story_parser_puts_the_prefill_back_and_cuts_an_unfinished_sentence():
    # A prefilled reply continues "I": a lowercase start or an apostrophe joins it.
    parsed = synthempathy.parse_story("woke up to an empty house. My dog had run off in the night and")
    assert parsed == ("I woke up to an empty house.", None, True)
    assert synthempathy.parse_story("'m sitting by the window. It is raining.").text == "I'm sitting by the window. It is raining."
    # A reply that opened its own text (no prefill, an OpenAI server) keeps it, minus preamble and label.
    own = synthempathy.parse_story("Here is a short story:\n**Story:** Yesterday my sister called me. She was crying!**")
    assert own.text == "Yesterday my sister called me. She was crying!" and own.reject_reason is None
    # Commentary after a blank line is not the story; whitespace is collapsed.
    assert synthempathy.parse_story("lost my keys.\n  Then I found them.\n\nI hope you like this story!").text == \
        "I lost my keys. Then I found them."
    assert synthempathy.parse_story('I said "no way." Then I left.').text == 'I said "no way." Then I left.'
    assert synthempathy.parse_story('"I lost my keys. Then I said "oh no.""').text == 'I lost my keys. Then I said "oh no."'
    assert synthempathy.parse_story('I heard her say "stop."').text == 'I heard her say "stop."'


@pytest.mark.parametrize("reply, reason", [
    ("", generation.REJECT_EMPTY),
    ("  \n ", generation.REJECT_EMPTY),
    ("**Story:**", generation.REJECT_EMPTY),
    ("was walking home when the", synthempathy.REJECT_CUT_OFF),
    ("The storm knocked the old oak down. Everyone in town was sad.", synthempathy.REJECT_NOT_FIRST_PERSON),
])
def test_story_and_explanation_parsers_reject_with_a_reason(reply, reason):
    for parse in (synthempathy.parse_story, synthempathy.parse_explanation):
        parsed = parse(reply)
        assert parsed.reject_reason == reason and parsed.text == ""


def test_response_parser_needs_no_first_person_but_a_complete_sentence():
    assert synthempathy.parse_empathetic_response("Response: That sounds so hard. You must miss her.").text == \
        "That sounds so hard. You must miss her."
    assert synthempathy.parse_empathetic_response("That sounds hard. Have you").text == "That sounds hard."
    assert synthempathy.parse_empathetic_response("").reject_reason == generation.REJECT_EMPTY
    assert synthempathy.parse_empathetic_response("oh no that is").reject_reason == synthempathy.REJECT_CUT_OFF
    # No prefill for the response: a lowercase start is the reply, not a continuation of anything.
    assert synthempathy.parse_empathetic_response("wow, that is great news!").text == "wow, that is great news!"


PASSAGE_WORDS = st.sampled_from(["I", "'m", "my", "Story:", "**Response:**", "Here is a story:", "\n", "\n\n",
                                  ".", "!", "?", '"', "the cat ran", "She left", "…", " ", "and then"])


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(PASSAGE_WORDS, max_size=40).map(" ".join)))
def test_passage_parsers_on_fuzzed_replies(text):
    """Any reply is a passage that ends a sentence, or a reject with a reason; never an exception."""
    for parse in (synthempathy.parse_story, synthempathy.parse_explanation, synthempathy.parse_empathetic_response):
        parsed = parse(text)
        assert (parsed.reject_reason is None) == bool(parsed.text)
        if parsed.text:
            assert parsed.text == parsed.text.strip() and "\n" not in parsed.text
            assert re.search(r"[.!?…][\"'”’)\]]*$", parsed.text)


def test_chats_carry_the_situation_story_and_explanation_and_prefill_first_person():
    chat = synthempathy.story_chat("my cat is sick .", "sad")
    assert "Situation: my cat is sick ." in chat[1]["content"] and "feeling sad" in chat[1]["content"]
    assert chat[-1] == {"role": "assistant", "content": synthempathy.FIRST_PERSON_PREFILL}
    assert synthempathy.story_chat("x", "sad", prefill=None)[-1]["role"] == "user"
    chat = synthempathy.explanation_chat("I lost my job.", "")
    assert "Story: I lost my job." in chat[1]["content"] and "some emotion" in chat[1]["content"]
    chat = synthempathy.empathetic_response_chat("I lost my job today.")
    assert chat[-1] == {"role": "user", "content": "I lost my job today."}


# ---- near-duplicate removal -------------------------------------------------------------------------

STORY = ("I woke up to find my cat lying on the couch. He had not eaten for three days and the vet "
         "told me there was little more they could do. I sat next to him all afternoon stroking his fur.")


def test_dedupe_removes_near_duplicates_and_keeps_distinct_texts():
    texts = [
        STORY,
        STORY.replace("afternoon", "evening"),                       # one word changed: a near duplicate
        "I was driving home when a huge truck drifted into my lane and I swerved onto the shoulder.",
        STORY.upper(),                                              # case does not make a new story
        "My sister called to say she got the job she wanted, and I cried with joy for her.",
        STORY,                                                      # an exact copy
    ]
    assert dedupe.near_duplicates(texts, threshold=0.5, num_perm=128, shingle_words=3) == [None, 0, None, 0, None, 0]
    # A high threshold keeps the one-word variant (Jaccard ~0.9 < 0.95) but never an exact copy.
    assert dedupe.near_duplicates(texts, threshold=0.95, num_perm=128, shingle_words=3)[1] is None
    assert dedupe.near_duplicates(texts, threshold=0.95, num_perm=128, shingle_words=3)[5] == 0
    assert dedupe.near_duplicates([], threshold=0.5, num_perm=128, shingle_words=3) == []
    with pytest.raises(PipelineError, match=r"in \(0, 1\)"):
        dedupe.near_duplicates(texts, threshold=1.0, num_perm=128, shingle_words=3)


def test_word_shingles():
    assert dedupe.word_shingles("I can't sleep, again.", 2) == {b"i can't", b"can't sleep", b"sleep again"}
    assert dedupe.word_shingles("Hi there", 3) == {b"hi there"}


# ---- filters and their counts, with scripted replies ------------------------------------------------
# The LLM's replies are set per request seed (the recipe keys each request by story and step), so
# every reject reason is hit on purpose; the real model runs below.

GOOD_STORIES = [
    STORY,
    "I missed the last train home and spent the night on a cold bench at the station.",
    "My best friend moved to another country last spring and I still set two cups out for coffee.",
    "I finally passed my driving test on the fourth try and drove my grandmother to the market.",
    "Our basement flooded after the storm and I lost every photo album my mother had kept.",
    "I found a wallet full of cash on the bus and spent an hour tracking down its owner.",
    "My manager praised my report in front of the whole team and I could not stop smiling.",
    "I forgot my daughter's school play because of a late meeting and she cried at dinner.",
    "The neighbours threw me a surprise party for my fortieth birthday with a huge chocolate cake.",
    "I waited three hours in the emergency room while my father had his broken arm set.",
    "Someone scratched a long line down the side of my new car in the parking lot.",
    "I adopted a shy old greyhound from the shelter and tonight he finally slept on my bed.",
]
GOOD_EXPLANATION = "I feel so hurt because my best friend forgot my birthday, and it made me think she does not care."
GOOD_RESPONSE = "That sounds really painful. Feeling forgotten by someone close hurts, and your feelings make sense."
LONG = " ".join(["I kept thinking about it all night long."] * 8)  # 64 words, over max_words 45

# (conversation, story number) -> replies for the story, explanation and response steps (None = the good default)
SCRIPT = {
    ("a", 0): (GOOD_STORIES[0], None, None),                       # a sample
    ("a", 1): ("", None, None),                                    # story_empty
    ("a", 2): ("walked to the station and then", None, None),      # story_cut_off
    ("a", 3): ("The storm knocked down the oak in the park.", None, None),  # story_not_first_person
    ("a", 4): ("cried all day.", None, None),                      # story_too_short ("I cried all day.")
    ("a", 5): (LONG, None, None),                                  # story_too_long
    ("b", 0): (GOOD_STORIES[0].replace("afternoon", "evening"), None, None),  # story_near_duplicate
    ("b", 1): (GOOD_STORIES[1], "", None),                         # explanation_empty
    ("b", 2): (GOOD_STORIES[2], "was so upset because the", None),  # explanation_cut_off
    ("b", 3): (GOOD_STORIES[3], "She was upset about the broken vase for weeks.", None),  # explanation_not_first_person
    ("b", 4): (GOOD_STORIES[4], "am sad.", None),                  # explanation_too_short
    ("b", 5): (GOOD_STORIES[5], LONG, None),                       # explanation_too_long
    ("c", 0): (GOOD_STORIES[6], "I was so damn angry when my boss yelled at me in front of everyone.", None),
    ("c", 1): (GOOD_STORIES[7], None, ""),                         # response_empty
    ("c", 2): (GOOD_STORIES[8], None, "That sounds really hard and"),  # response_cut_off
    ("c", 3): (GOOD_STORIES[9], None, "Oh no."),                   # response_too_short
    ("c", 4): (GOOD_STORIES[10], None, "That is awful. " + LONG),  # response_too_long
    ("c", 5): (GOOD_STORIES[11], None, "What the hell, that is such a shitty thing to happen to you."),
}
SCRIPTED_SAMPLES = [("a", 0)]
STEPS = ("story", "explanation", "response")


class ScriptedBackend:
    """Replies by request seed: request_seed(generate.seed, '<conv>#story<k>#<step>') -> SCRIPT's text."""

    def __init__(self, seed: int):
        self.replies = {}
        for (conv, k), texts in SCRIPT.items():
            for step, text in zip(STEPS, texts, strict=True):
                default = {"explanation": GOOD_EXPLANATION, "response": GOOD_RESPONSE}.get(step)
                self.replies[request_seed(seed, f"{conv}#story{k}#{step}")] = default if text is None else text
        self.calls = 0

    def generate(self, chats, sampling, seeds=None):
        self.calls += 1
        return [self.replies[s] for s in seeds]


def _train(conversations: dict[str, tuple[str, str]]) -> pl.DataFrame:
    """Two prepared samples per conversation, as prepare writes them (one row per listener turn)."""
    rows = [{"sample_id": f"{conv}:{turn}", "conv_id": conv, "split": "train", "emotion": emotion,
             "situation": situation, "context": ["hello ."], "response": "hi ."}
            for conv, (emotion, situation) in conversations.items() for turn in (2, 4)]
    return pl.DataFrame(rows, schema=ed.SAMPLES_SCHEMA)


SCRIPTED_TRAIN = {"a": ("sad", "my cat is ill ."), "b": ("lonely", "my friend moved away ."),
                  "c": ("angry", "my boss yelled at me .")}


def _generate_params(**synthempathy_keys) -> params.Generate:
    cfg = {"stories_per_situation": 6, "min_words": 5, "max_words": 45, **synthempathy_keys}
    return params.Generate.model_validate({"recipe": "synthempathy", "num_seeds": 3, "temperature": 0.8,
                                           "shard_size": 2, "seed": 0, "synthempathy": cfg})


def _run_scripted(tmp_path: Path, p: params.Generate, epitome_dir=None):
    return synthempathy.generate(_train(SCRIPTED_TRAIN), ScriptedBackend(p.seed), p, shard_dir=tmp_path / "shards",
                                 settings={}, generator="scripted", epitome_dir=epitome_dir, show_progress=False)


def test_every_filter_and_parser_failure_is_a_counted_reject(tmp_path):
    samples, rejects, counts, _ = _run_scripted(tmp_path, _generate_params())
    expected = {reason: 1 for reason in synthempathy.REJECT_REASONS if reason != synthempathy.BELOW_EPITOME_FLOOR}
    assert {r: counts[f"rejected_{r}"] for r in expected} == expected
    assert counts["rejected_below_epitome_floor"] == 0  # no floor set
    # Every story is one sample or one reject; the reject table holds each with its reason.
    assert counts["stories"] == 18 == counts["samples"] + counts["rejected"]
    assert sorted(rejects["reason"].to_list()) == sorted(expected)
    assert rejects.filter(pl.col("reason") == "story_near_duplicate")["raw_text"].item() == \
        GOOD_STORIES[0].replace("afternoon", "evening")
    assert rejects.filter(pl.col("reason") == "response_empty")["seed_sample_id"].item() == "c:2"
    assert counts["stories_parsed"] == 13 and counts["stories_unique"] == 12
    assert counts["explanations"] == 12 and counts["explanations_kept"] == 6 and counts["responses"] == 6
    # The sample: the explanation is the speaker's one turn, the response answers it.
    assert list(samples.schema.items()) == list(generation.SYNTH_SCHEMA.items())
    row = samples.row(0, named=True)
    assert samples.height == len(SCRIPTED_SAMPLES)
    assert row["context"] == [GOOD_EXPLANATION] and row["response"] == GOOD_RESPONSE
    assert row["sample_id"] == row["conv_id"] == "synthempathy:a:0" and row["split"] == "synthetic"
    assert row["seed_sample_id"] == "a:2" and row["emotion"] == "sad" and row["situation"] == "my cat is ill ."
    assert row["round_count"] == 1 and row["prompt_variant"] is None and row["generator"] == "scripted"
    assert counts["mean_explanation_words"] == len(GOOD_EXPLANATION.split())
    assert list(rejects.schema) == list(generation.REJECTS_SCHEMA)


def test_switching_a_filter_off_keeps_what_it_dropped(tmp_path):
    _, _, counts, _ = _run_scripted(tmp_path, _generate_params(profanity_filter=False))
    assert counts["rejected_explanation_profanity"] == counts["rejected_response_profanity"] == 0
    # The profane explanation now gets its (good) response; the profane response passes.
    assert counts["samples"] == 3
    _, _, counts, _ = _run_scripted(tmp_path, _generate_params(max_words=150))
    assert counts["rejected_story_too_long"] == counts["rejected_explanation_too_long"] == 0
    assert counts["rejected_response_too_long"] == 0


def _fixed_level_classifier(directory: Path, levels: dict[str, int]) -> None:
    """Real EPITOME heads on MiniLM features whose weights are zero: each mechanism always answers
    its given level, so a floor's verdict is known in advance."""
    from empathy_pipeline.data.epitome import MECHANISMS
    from empathy_pipeline.evaluation.epitome_levels import EpitomeClassifier

    heads = {}
    for m in MECHANISMS:
        intercept = np.full(3, -10.0, dtype=np.float32)
        intercept[levels[m]] = 10.0
        heads[m] = (np.zeros((3, 4 * 384), dtype=np.float32), intercept)
    EpitomeClassifier(None, heads, {"method": "frozen_head", "encoder": "all-minilm-l6-v2"}).save(directory)


def test_epitome_floor_on_the_sum_or_one_mechanism(tmp_path):
    classifier = tmp_path / "epitome"
    _fixed_level_classifier(classifier, {"ER": 2, "IP": 1, "EX": 0})
    # sum = 3: a floor of 3 keeps the sample and reports its levels, 4 drops it (counted).
    samples, _, counts, _ = _run_scripted(tmp_path, _generate_params(epitome_floor=3), classifier)
    assert samples.height == 1 and counts["rejected_below_epitome_floor"] == 0
    assert counts["epitome_er_mean"] == 2.0 and counts["epitome_ip_pct1"] == 100.0
    samples, rejects, counts, _ = _run_scripted(tmp_path, _generate_params(epitome_floor=4), classifier)
    assert samples.height == 0 and counts["rejected_below_epitome_floor"] == 1 and "epitome_er_mean" not in counts
    assert rejects.filter(pl.col("reason") == "below_epitome_floor")["raw_text"].item() == GOOD_RESPONSE
    # One mechanism: EX is 0, so any EX floor above 0 drops it; ER 2 keeps it.
    _, _, counts, _ = _run_scripted(tmp_path, _generate_params(epitome_measure="EX", epitome_floor=1), classifier)
    assert counts["rejected_below_epitome_floor"] == 1
    _, _, counts, _ = _run_scripted(tmp_path, _generate_params(epitome_measure="ER", epitome_floor=2), classifier)
    assert counts["samples"] == 1
    # A floor without the classifiers fails in one line before any model call.
    for missing in (None, tmp_path / "no-such-dir"):
        backend = ScriptedBackend(0)
        with pytest.raises(PipelineError, match="train_epitome stage, or set generate.synthempathy.epitome_floor: null"):
            synthempathy.generate(_train(SCRIPTED_TRAIN), backend, _generate_params(epitome_floor=1),
                                  shard_dir=tmp_path / "s", settings={}, generator="x", epitome_dir=missing)
        assert backend.calls == 0


def test_epitome_measure_per_pair():
    levels = {"ER": [2, 0, 1], "IP": [1, 0, 2], "EX": [0, 0, 2]}
    assert synthempathy.epitome_measure(levels, "sum") == [3, 0, 5]
    assert synthempathy.epitome_measure(levels, "IP") == [1, 0, 2]


def test_a_rerun_resumes_every_step_and_asks_the_model_nothing(tmp_path):
    p = _generate_params()
    first = ScriptedBackend(p.seed)
    out1 = synthempathy.generate(_train(SCRIPTED_TRAIN), first, p, shard_dir=tmp_path, settings={},
                                 generator="scripted", epitome_dir=None, show_progress=False)
    again = ScriptedBackend(p.seed)
    out2 = synthempathy.generate(_train(SCRIPTED_TRAIN), again, p, shard_dir=tmp_path, settings={},
                                 generator="scripted", epitome_dir=None, show_progress=False)
    assert first.calls > 0 and again.calls == 0
    assert out2[3] == {"shards": out1[3]["shards"], "shards_resumed": out1[3]["shards"]}
    assert out1[0].equals(out2[0]) and out1[1].equals(out2[1]) and out1[2] == out2[2]
    assert sorted(d.name for d in tmp_path.iterdir()) == ["explanations", "responses", "stories"]


def test_situations_are_one_per_conversation_and_counted():
    train = _train({**SCRIPTED_TRAIN, "d": ("proud", "  ")})
    situations, skipped = synthempathy.select_situations(train, 3, seed=0)
    assert skipped == 1 and situations["situation_id"].to_list() == ["a", "b", "c"]
    assert situations["seed_sample_id"].to_list() == ["a:2", "b:2", "c:2"]
    assert synthempathy.select_situations(train, 0.5, seed=0)[0].height == 2
    with pytest.raises(PipelineError, match="4 situations asked for, but the train split has 3 conversations"):
        synthempathy.select_situations(train, 4, seed=0)
    with pytest.raises(PipelineError, match="no situation column"):
        synthempathy.select_situations(train.drop("situation"), 1, seed=0)


@pytest.mark.parametrize("key, value, message", [
    ("max_words", 4, "generate.synthempathy.max_words: 4 is not allowed (below min_words (8)"),
    ("epitome_floor", 7, "generate.synthempathy.epitome_floor: 7 is not allowed (above 6, the highest ER + IP + EX"),
    ("dedupe_threshold", 1.0, "generate.synthempathy.dedupe_threshold: 1.0 is not allowed (Input should be less than 1)"),
    ("stories", 3, "generate.synthempathy.stories: unknown key"),
])
def test_bad_recipe_params_are_one_line(tmp_path, key, value, message):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["generate"]["synthempathy"][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PipelineError) as error:
        params.load("generate", tmp_path / "params.yaml")
    assert message in str(error.value) and ";" not in str(error.value)


def test_the_default_recipe_ignores_the_synthempathy_keys(tmp_path):
    """Changing generate.synthempathy leaves the synth_empathy recipe's shards valid (its fingerprint
    leaves those keys out), so adding them changed nothing in the default demo."""
    class Layout:  # a well-formed multi-round reply for every chat
        calls = 0

        def generate(self, chats, sampling, seeds=None):
            Layout.calls += 1
            return [generation.format_rounds([("I lost my keys.", "Oh no, that is annoying.")] * 3)
                    .removeprefix(generation.GENERATION_PREFILL) for _ in chats]

    project = _project(tmp_path, recipe="synth_empathy")
    run_stage("generate", project, lambda model, adapter: Layout())
    first = (project / "data/synth/generated.parquet").read_bytes()
    calls = Layout.calls
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["generate"]["synthempathy"].update(stories_per_situation=9, epitome_floor=2)
    (project / "params.yaml").write_text(yaml.safe_dump(data))
    run_stage("generate", project, lambda model, adapter: Layout())
    assert Layout.calls == calls and (project / "data/synth/generated.parquet").read_bytes() == first


# ---- the stage on the embedded SmolLM2, killed between shards and resumed ----------------------------

REAL = {"recipe": "synthempathy", "num_seeds": 3, "shard_size": 3, "temperature": 0.8, "top_p": 0.95, "seed": 0,
        "synthempathy": {"stories_per_situation": 2, "story_max_new_tokens": 24, "explanation_max_new_tokens": 24,
                         "response_max_new_tokens": 16, "min_words": 3, "epitome_floor": 0}}


def _project(root: Path, base_model_dir: Path | None = None, **generate) -> Path:
    """A scratch project: params.yaml (the project's, generate and llm made small), ED-format sample
    data prepared as the prepare stage does, models/synth_base and an EPITOME classifier."""
    from stagerun import untrained_epitome

    root.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["generate"].update({"num_seeds": 3, "shard_size": 3, "max_new_tokens": 24, **generate})
    data["llm"].update({"batch_size": 6, "dtype": "float32", "device": "cpu"})
    (root / "params.yaml").write_text(yaml.safe_dump(data))
    train, _ = ed.read_ed_csv(SAMPLE / "train.csv", "train", max_conversations=3, normalize=ed.paper_normalize)
    (root / "data" / "prepared").mkdir(parents=True)
    train.write_parquet(root / "data" / "prepared" / "train.parquet")
    (root / "models").mkdir()
    if base_model_dir is not None:
        (root / "models" / "synth_base").symlink_to(base_model_dir)
    else:
        (root / "models" / "synth_base").mkdir()
    untrained_epitome(root / "models" / "epitome")
    return root


@pytest.fixture(scope="module")
def smollm(base_model_dir):
    return load_backend({"backend": "transformers", "batch_size": 6, "dtype": "float32", "device": "cpu",
                         "show_progress": False}, model=str(base_model_dir))


@pytest.mark.slow
def test_the_stage_on_smollm2_resumes_a_killed_run_to_identical_outputs(tmp_path, base_model_dir, smollm):
    _, options = command(STAGES["generate"])
    outputs = [options[o][0] for o in ("out", "rejects", "metrics")]
    whole = _project(tmp_path / "whole", base_model_dir, **REAL)
    counted_whole = Counting(smollm)
    run_stage("generate", whole, lambda model, adapter: counted_whole)

    metrics = json.loads((whole / options["metrics"][0]).read_text())
    assert metrics["situations"] == 3 and metrics["stories"] == 6
    assert metrics["stories"] == metrics["samples"] + metrics["rejected"]
    assert metrics["rejected"] == sum(metrics[f"rejected_{r}"] for r in synthempathy.REJECT_REASONS)
    generated = pl.read_parquet(whole / options["out"][0])
    assert list(generated.schema.items()) == list(generation.SYNTH_SCHEMA.items())
    assert generated.height == metrics["samples"] >= 1
    # One speaker turn: the first-person explanation.
    assert all(len(c) == 1 and re.search(r"\b(I|me|my)\b", c[0], re.IGNORECASE) for c in generated["context"].to_list())
    assert set(generated["emotion"].to_list()) <= {"sad", "trusting", "terrified"}
    assert metrics["epitome_er_mean"] >= 0  # the floor (0) ran the classifier over the kept pairs
    assert set(pl.read_parquet(whole / options["rejects"][0])["reason"].to_list()) <= set(synthempathy.REJECT_REASONS)

    killed = _project(tmp_path / "killed", base_model_dir, **REAL)
    shard_dir = killed / options["shards"][0]
    # Killed once the stories shard and the first explanations shard are written.
    with pytest.raises(Killed):
        run_stage("generate", killed, lambda model, adapter: KillAfterShards(smollm, shard_dir, shards=2))
    assert not (killed / outputs[0]).exists()
    counted_resume = Counting(smollm)
    run_stage("generate", killed, lambda model, adapter: counted_resume)
    assert 0 < counted_resume.calls < counted_whole.calls
    for rel in outputs:
        assert (killed / rel).read_bytes() == (whole / rel).read_bytes(), f"{rel} differs after resume"
