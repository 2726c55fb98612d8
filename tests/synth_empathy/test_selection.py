"""Selection (Synth-Empathy §3.2-3.3): exact K-Center-Greedy, quality threshold, embeddings, stage wiring."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import polars as pl
import pytest
from dvc_spec import stage_argv

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.modeling import encoders
from empathy_pipeline.synth_empathy import kcenter, similarity
from empathy_pipeline.synth_empathy.kcenter import diversity_k, embedding_rows, k_center_greedy
from empathy_pipeline.synth_empathy.selection import quality_select, quality_table
from empathy_pipeline.synth_empathy.similarity import scoring_table

# Small blocks and pools force every path: syncs, pool exhaustion and pool widening.
SETTINGS = [{}, {"block_size": 4, "pool_size": 8}, {"block_size": 2, "pool_size": 3}]


def plain_k_center(x: np.ndarray, k: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    """The textbook algorithm in float64: one full distance pass per pick; argmax's first hit = lowest index."""
    x = x.astype(np.float64)
    k = min(k, len(x))
    nearest = ((x - x[first]) ** 2).sum(1)
    picks = [first]
    radii = []
    while True:
        alive = np.delete(nearest, picks)
        radii.append(np.sqrt(alive.max()) if alive.size else 0.0)
        if len(picks) == k:
            break
        nearest[picks] = -np.inf
        w = int(np.argmax(nearest))
        picks.append(w)
        nearest = np.minimum(nearest, ((x - x[w]) ** 2).sum(1))
    return np.asarray(picks), np.asarray(radii)


def assert_same_picks(x: np.ndarray, k: int, first: int, **settings) -> None:
    expected, _ = plain_k_center(x, k, first)
    got = k_center_greedy(x, k, first, **settings)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_kcenter_matches_plain_algorithm_on_random_data(settings, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    for k in (2, 37, 150, 300):
        assert_same_picks(x, k, first=int(rng.integers(300)), **settings)


def test_kcenter_matches_plain_algorithm_on_unit_embeddings():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((20, 64))
    x = (centres[rng.integers(0, 20, 1500)] + 0.5 * rng.standard_normal((1500, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert_same_picks(x, 400, first=7, block_size=32, pool_size=256)


@pytest.mark.parametrize("settings", SETTINGS)
def test_kcenter_exact_ties_on_integer_grid_go_to_lowest_index(settings):
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    for first in (0, 62, 124):
        assert_same_picks(grid, len(grid), first, **settings)


@pytest.mark.parametrize("settings", SETTINGS)
def test_kcenter_duplicated_points(settings):
    rng = np.random.default_rng(3)
    x = np.repeat(rng.standard_normal((40, 6)).astype(np.float32), 4, axis=0)
    rng.shuffle(x)
    x[5] = -0.0 * x[5]  # -0.0 and 0.0 are the same point
    x[9] = 0.0 * x[9]
    for first in (0, 11, 159):
        # k = n runs past the 40 distinct points into the copies (all at distance 0).
        for k in (30, 41, 160):
            assert_same_picks(x, k, first, **settings)


def test_kcenter_near_ties_are_resolved_exactly(monkeypatch):
    """Far from the origin, ||x||^2 - 2x.c + ||c||^2 loses the small distances to rounding: many
    candidates fall inside the error margin and must be settled by the exact direct distance."""
    resolved = []
    exact_argmax = kcenter._KCenter.exact_argmax
    monkeypatch.setattr(kcenter._KCenter, "exact_argmax",
                        lambda self, idx: resolved.append(len(idx)) or exact_argmax(self, idx))
    rng = np.random.default_rng(4)
    offsets = rng.integers(0, 5, (250, 4)) * 1e-3 + rng.integers(0, 2, (250, 4)) * 2.0 ** -14
    x = (1000.0 + offsets).astype(np.float32)
    for settings in SETTINGS:
        assert_same_picks(x, 250, first=3, **settings)
    assert resolved, "the near-tie path was never exercised"


def test_kcenter_near_ties_in_float32_embeddings():
    # Points one float32 ulp apart around the same direction: distances differ in the last bits only.
    rng = np.random.default_rng(5)
    base = rng.standard_normal(32).astype(np.float32)
    x = np.repeat(base[None, :], 120, axis=0)
    for i in range(120):
        x[i, i % 32] = np.nextafter(x[i, i % 32], np.float32(np.inf) if i % 2 else np.float32(-np.inf))
        x[i, (i * 7) % 32] = np.nextafter(x[i, (i * 7) % 32], np.float32(np.inf))
    assert_same_picks(x, 120, first=0)


def test_kcenter_float16_input():
    x = np.random.default_rng(6).standard_normal((200, 8)).astype(np.float16)
    assert_same_picks(x, 120, first=5)


@pytest.mark.filterwarnings("error")
def test_kcenter_reads_a_read_only_memory_map(tmp_path):
    x = np.random.default_rng(9).standard_normal((150, 6)).astype(np.float32)
    np.save(tmp_path / "e.npy", x)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    assert k_center_greedy(mapped, 90, 1).tolist() == plain_k_center(x, 90, 1)[0].tolist()


def test_kcenter_first_index_k1_and_radii():
    x = np.random.default_rng(7).standard_normal((100, 5)).astype(np.float32)
    assert k_center_greedy(x, 1, 42).tolist() == [42]
    picks, radii = k_center_greedy(x, 30, 42, return_radii=True)
    expected, expected_radii = plain_k_center(x, 30, 42)
    assert picks[0] == 42 and picks.tolist() == expected.tolist()
    np.testing.assert_allclose(radii, expected_radii, rtol=1e-9)
    assert np.all(np.diff(radii) <= 0)


def test_kcenter_k_at_least_n_keeps_everything_with_a_warning():
    x = np.random.default_rng(8).standard_normal((50, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="keeping all 50"):
        picks = k_center_greedy(x, 80, 9)
    assert picks.tolist() == plain_k_center(x, 50, 9)[0].tolist()
    assert sorted(picks.tolist()) == list(range(50))


def test_kcenter_rejects_bad_input():
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(PipelineError, match="first_index 4"):
        k_center_greedy(x, 2, 4)
    x[2, 1] = np.nan
    with pytest.raises(PipelineError, match="row 2 is not finite"):
        k_center_greedy(x, 2, 0)


# ---- quality selection ---------------------------------------------------------------------------


def test_quality_select_keeps_strictly_above_threshold():
    assert quality_select([59.9, 60.0, 60.0001, 99.0], 60).tolist() == [2, 3]


def test_quality_select_empty_result_names_the_highest_similarity():
    with pytest.raises(PipelineError, match=r"highest similarity S = 57\.25 is not above .*T = 60"):
        quality_select([12.0, 57.25], 60)
    with pytest.raises(PipelineError, match=r"highest similarity S = 60 is not above"):
        quality_select([12.0, 60.0], 60)


def _generated(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "sample_id": [f"g{i}" for i in range(n)],
        "context": [[f"speaker turn {i}"] for i in range(n)],
        "response": [f"reply {i}" for i in range(n)],
    })


def test_scoring_table_joins_and_counts_unscored_rows():
    disc = pl.DataFrame({"sample_id": ["g3", "g0", "g1"], "disc_response": ["a", "b", "  "]})
    table, unscored = scoring_table(_generated(4), disc)
    assert table["sample_id"].to_list() == ["g0", "g3"]  # generated order; g1 empty, g2 missing
    assert table["disc_response"].to_list() == ["b", "a"]
    assert unscored == 2
    with pytest.raises(PipelineError, match="discriminated table: 1 duplicated sample_id"):
        scoring_table(_generated(4), pl.concat([disc, disc.head(1)]))


def test_quality_table_carries_similarity_and_embedding_row():
    scores = pl.DataFrame({"sample_id": ["g2", "g0", "g1"], "disc_response": ["x"] * 3,
                           "similarity": [80.0, 60.0, 75.5]})
    kept = quality_table(_generated(3), scores, 60)
    assert kept["sample_id"].to_list() == ["g2", "g1"]
    assert kept["embedding_row"].to_list() == [0, 2]
    assert kept["similarity"].to_list() == [80.0, 75.5]
    assert embedding_rows(kept, scores, 3).tolist() == [0, 2]
    with pytest.raises(PipelineError, match="embeddings have 4 rows but scores table 3"):
        embedding_rows(kept, scores, 4)
    with pytest.raises(PipelineError, match="not in generated"):
        quality_table(_generated(2), scores, 60)


def test_random_subset_has_k_center_size_and_is_seeded():
    """SE Table 4's ablation: as many samples as K-Center-Greedy picks, drawn at random, reproducibly."""
    from empathy_pipeline.synth_empathy.kcenter import diverse_subset

    n = 40
    quality = pl.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "embedding_row": list(range(n))})
    scores = pl.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "similarity": [50.0] * n})
    x = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    kc, kc_metrics = diverse_subset(quality, scores, x, k=None, ratio=0.25, seed=0, device="cpu")
    rnd, rnd_metrics = diverse_subset(quality, scores, x, k=None, ratio=0.25, seed=0, device="cpu", method="random")
    again, _ = diverse_subset(quality, scores, x, k=None, ratio=0.25, seed=0, device="cpu", method="random")
    other, _ = diverse_subset(quality, scores, x, k=None, ratio=0.25, seed=1, device="cpu", method="random")
    assert rnd.height == kc.height == 10 and rnd_metrics["k"] == kc_metrics["k"] == 10
    assert rnd_metrics["method"] == "random" and kc_metrics["method"] == "kcenter"
    assert rnd["sample_id"].to_list() == again["sample_id"].to_list() != other["sample_id"].to_list()
    assert rnd["sample_id"].n_unique() == 10 and rnd.columns == kc.columns
    with pytest.raises(PipelineError, match="diversity.method"):
        diverse_subset(quality, scores, x, k=None, ratio=0.25, seed=0, device="cpu", method="farthest")


def test_diversity_k():
    assert diversity_k(1000, None, 0.9) == 900
    assert diversity_k(1000, 37, 0.9) == 37
    assert diversity_k(3, None, 0.1) == 1
    with pytest.raises(PipelineError, match="diversity.ratio"):
        diversity_k(10, None, 1.5)


# ---- real embedding model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return encoders.load_embedder("all-minilm-l6-v2", device="cpu")


@pytest.mark.slow
def test_similarity_of_identical_texts_is_100(minilm):
    a = ["I am so sorry to hear about your dog.", "That sounds exciting, congratulations!"]
    b = ["I am so sorry to hear about your dog.", "The train leaves at nine from platform two."]
    s = similarity.similarity_scores(minilm, a, b, batch_size=2, show_progress=False)
    assert s[0] == pytest.approx(100.0, abs=1e-3)
    assert s[1] < 50


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_embed_to_npy_streams_unit_rows(minilm, tmp_path, dtype):
    texts = [f"sentence number {i} about feelings" for i in range(37)]
    out = tmp_path / "e.npy"
    encoders.embed_to_npy(minilm, texts, out, batch_size=4, dtype=dtype, show_progress=False)
    e = np.load(out)
    assert e.shape == (37, 384) and e.dtype == np.dtype(dtype)
    np.testing.assert_allclose(np.linalg.norm(e.astype(np.float64), axis=1), 1.0, atol=2e-3)
    direct = minilm.encode(texts[5:6], normalize_embeddings=True)
    np.testing.assert_allclose(e[5].astype(np.float32), direct[0], atol=2e-3)


@pytest.mark.slow
def test_stages_embed_quality_diversity(tmp_path):
    """The three stage scripts on a small synthetic set with the real MiniLM: files, alignment, metrics."""
    n = 30
    moods = ["lost my job", "won a prize", "my cat died", "passed my exam", "got lost in town"]
    generated = pl.DataFrame({
        "sample_id": [f"s{i}" for i in range(n)],
        "context": [[f"I {moods[i % 5]} yesterday.", "Oh no, really?", f"Yes, it was day {i}."] for i in range(n)],
        "response": [f"I am sorry that you {moods[i % 5]}." if i % 3 else "Turn left at the bridge." for i in range(n)],
        "emotion": ["sad"] * n,
    })
    discriminated = pl.DataFrame({
        "sample_id": [f"s{i}" for i in range(n) if i != 4],
        "disc_response": [f"I am so sorry you {moods[i % 5]}." for i in range(n) if i != 4],
    })
    (tmp_path / "data/synth").mkdir(parents=True)
    generated.write_parquet(tmp_path / "data/synth/generated.parquet")
    discriminated.write_parquet(tmp_path / "data/synth/discriminated.parquet")
    (tmp_path / "params.yaml").write_text(
        "models: {synth_base: smollm2-135m-instruct, efficient_base: smollm2-135m-instruct, embedding: all-minilm-l6-v2}\nembed: {batch_size: 8, dtype: float16}\n"
        "quality: {threshold: 60}\ndiversity: {k: null, ratio: 0.5, seed: 3, device: cpu}\n")
    for name in ("embed", "quality_select", "diversity_select"):
        done = subprocess.run(stage_argv(name), cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    scores = pl.read_parquet(tmp_path / "data/synth/scores.parquet")
    embeddings = np.load(tmp_path / "data/synth/sample_embeddings.npy")
    assert scores.height == n - 1 == embeddings.shape[0] and "s4" not in scores["sample_id"].to_list()
    assert embeddings.dtype == np.float16
    quality = pl.read_parquet(tmp_path / "data/selection/quality.parquet")
    assert (quality["similarity"] > 60).all() and quality.height < scores.height  # the off-topic replies go
    assert set(generated.columns) <= set(quality.columns)
    metrics = json.loads((tmp_path / "metrics/selection.json").read_text())
    assert metrics["n_generated"] == n and metrics["n_kept"] == quality.height and metrics["threshold"] == 60
    assert (tmp_path / "plots/similarity_histogram.png").stat().st_size > 1000

    diverse = pl.read_parquet(tmp_path / "data/selection/diverse.parquet")
    div_metrics = json.loads((tmp_path / "metrics/diversity.json").read_text())
    k = round(0.5 * quality.height)
    assert diverse.height == k == div_metrics["k"] and div_metrics["n_in"] == quality.height
    first = int(np.random.default_rng(3).integers(quality.height))
    assert diverse["sample_id"][0] == quality["sample_id"][first]
    expected, _ = plain_k_center(embeddings[quality["embedding_row"].to_numpy()], k, first)
    assert diverse["sample_id"].to_list() == quality["sample_id"].gather(expected).to_list()
    assert div_metrics["coverage_radius_max"] >= div_metrics["coverage_radius_min"] > 0


@pytest.mark.slow
def test_embedding_prompt_reaches_the_encoder(minilm):
    """models.embedding_prompt: a literal prefix is prepended to every text the stage encodes (a
    prompt name such as gte-Qwen2's "query" goes through the model's own prompts the same way)."""
    prompted = encoders.load_embedder("all-minilm-l6-v2", device="cpu", prompt="query: ")
    texts = ["i lost my job today .", "that sounds really hard ."]
    got = similarity.similarity_scores(prompted, texts[:1], texts[1:], show_progress=False)[0]
    by_hand = minilm.encode(["query: " + t for t in texts], normalize_embeddings=True)
    assert got == pytest.approx(100 * float(by_hand[0] @ by_hand[1]), abs=1e-4)
    plain = similarity.similarity_scores(minilm, texts[:1], texts[1:], show_progress=False)[0]
    assert abs(got - plain) > 0.1  # the prompt changed what was encoded
