"""What an edit of each package module makes stale, read from dvc.yaml's deps (tools/stage_deps.py).

DVC reruns a stage when a module among its deps changes, and the stages downstream of it when what
it writes changes. The table below is the documented cost of an edit (docs/architecture.md shows it):
(stages that list the module, those plus every stage downstream). A change to dvc.yaml or to the
imports that moves a number here must update the table, on purpose. The rules after it are the
promises behind the layout: a judge's prompt, the analysis tools and the metrics reach no training.
"""

from __future__ import annotations

import sys

import pytest
from dvc_spec import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import stage_deps  # noqa: E402

# module (under src/empathy_pipeline/): (stages listing it, those + downstream); 26 stage instances
INVALIDATES = {
    "__init__.py": (26, 26),
    "analysis/__init__.py": (3, 13),
    "analysis/ab.py": (0, 0),
    "analysis/bootstrap.py": (0, 0),
    "analysis/claims.py": (0, 0),
    "analysis/compare.py": (0, 0),
    "analysis/plots.py": (3, 13),
    "analysis/report.py": (0, 0),
    "analysis/sweeps.py": (0, 0),
    "cli.py": (0, 0),
    "core/__init__.py": (26, 26),
    "core/errors.py": (26, 26),
    "core/io.py": (26, 26),
    "core/lockcheck.py": (0, 0),
    "core/params.py": (26, 26),
    "core/profiles.py": (0, 0),
    "core/progress.py": (13, 21),
    "core/provenance.py": (12, 26),
    "core/stage.py": (26, 26),
    "data/__init__.py": (16, 23),
    "data/chat.py": (13, 18),
    "data/ed.py": (9, 22),
    "data/epitome.py": (9, 15),
    "data/fetch.py": (0, 0),
    "data/tokens.py": (9, 22),
    "efficient_empathy/__init__.py": (4, 9),
    "efficient_empathy/merge.py": (1, 3),
    "efficient_empathy/rating.py": (1, 9),
    "efficient_empathy/router.py": (1, 2),
    "efficient_empathy/split.py": (1, 8),
    "evaluation/__init__.py": (9, 15),
    "evaluation/epitome_levels.py": (9, 15),
    "evaluation/evaluate.py": (7, 7),
    "evaluation/metrics.py": (7, 7),
    "judges/__init__.py": (2, 10),
    "judges/ask.py": (2, 10),
    "judges/levels.py": (0, 0),
    "judges/pairwise.py": (0, 0),
    "judges/rating_agreement.py": (0, 0),
    "llm/__init__.py": (11, 20),
    "llm/backends.py": (11, 20),
    "llm/base.py": (11, 20),
    "llm/openai.py": (11, 20),
    "llm/table.py": (11, 20),
    "llm/transformers.py": (11, 20),
    "llm/vllm.py": (11, 20),
    "modeling/__init__.py": (21, 24),
    "modeling/encoders.py": (10, 15),
    "modeling/models.py": (19, 23),
    "modeling/training.py": (5, 16),
    "synth_empathy/__init__.py": (5, 8),
    "synth_empathy/data_quality.py": (1, 1),
    "synth_empathy/dedupe.py": (1, 8),
    "synth_empathy/generation.py": (1, 8),
    "synth_empathy/kcenter.py": (1, 4),
    "synth_empathy/selection.py": (1, 5),
    "synth_empathy/similarity.py": (1, 6),
    "synth_empathy/synthempathy.py": (1, 8),
}
# Prompts of judges that score results, not training data: an edit reruns no training.
JUDGE_PROMPTS = ("judges/levels.py", "judges/pairwise.py", "judges/rating_agreement.py", "synth_empathy/data_quality.py")


@pytest.fixture(scope="module")
def dag() -> list[stage_deps.Stage]:
    return stage_deps.stages()


def _invalidates(dag, module: str) -> tuple[set[str], set[str]]:
    return stage_deps.invalidates(dag, f"src/empathy_pipeline/{module}")


def test_the_table_names_every_module():
    modules = {m.removeprefix("src/empathy_pipeline/") for m in stage_deps.package_modules()}
    assert set(INVALIDATES) == modules


@pytest.mark.parametrize("module", sorted(INVALIDATES))
def test_an_edit_of_a_module_makes_stale_what_the_table_says(dag, module):
    direct, reached = _invalidates(dag, module)
    assert (len(direct), len(reached)) == INVALIDATES[module], f"{module}: lists it {sorted(direct)}"


@pytest.mark.parametrize("module", JUDGE_PROMPTS)
def test_a_judge_prompt_edit_invalidates_no_training_stage(dag, module):
    _, reached = _invalidates(dag, module)
    assert not {s for s in reached if s.startswith("train")}, f"{module} reaches {sorted(reached)}"


def test_the_analysis_tools_are_no_stage_dep_but_the_figures(dag):
    """Reports, comparisons, claims, sweeps and the A/B sheet read results; no stage runs them. The stages
    draw their figures with analysis/plots.py, so an edit there reruns those three (and nothing
    downstream of them unless it changes their data, which a figure edit does not)."""
    for module in INVALIDATES:
        if module.startswith("analysis/") and module not in ("analysis/__init__.py", "analysis/plots.py"):
            assert _invalidates(dag, module)[0] == set(), module
    assert _invalidates(dag, "analysis/plots.py")[0] == {"quality_select", "split", "judge_quality"}


def test_the_metrics_reach_only_the_evaluations(dag):
    for module in ("evaluation/metrics.py", "evaluation/evaluate.py"):
        direct, reached = _invalidates(dag, module)
        assert direct == reached and all(s.startswith("evaluate@") for s in reached), module


def test_the_synth_empathy_similarity_rule_leaves_other_models_alone(dag):
    """Issue 24's case: metrics once imported the embedding module, so S's rule made every evaluation stale."""
    _, reached = _invalidates(dag, "synth_empathy/similarity.py")
    assert {s for s in reached if s.startswith("evaluate@")} == {"evaluate@synth"}


def test_the_count_follows_the_deps(dag):
    """The checker itself: a stage that lists one more module is counted for it."""
    extra = [stage_deps.Stage(s.name, s.script, s.deps + ("src/empathy_pipeline/judges/pairwise.py",), s.outs)
             if s.name == "split" else s for s in dag]
    direct, reached = stage_deps.invalidates(extra, "src/empathy_pipeline/judges/pairwise.py")
    assert direct == {"split"} and {"train_expert@sensibility", "btx_merge", "evaluate@moe"} <= reached
