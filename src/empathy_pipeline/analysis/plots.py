"""Figures for the pipeline's reports: matplotlib (Agg, no display), saved as PNG atomically."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from empathy_pipeline.core.io import atomic_path  # noqa: E402


def subplots(*args, **kwargs):
    """(figure, axes) of matplotlib's pyplot.subplots, on the Agg backend this module selects."""
    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike) -> None:
    """The figure as a PNG at `path`, written atomically, and closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_data_quality(metrics: dict, path: str | os.PathLike,
                      criteria: tuple[str, ...] = ("coherence", "naturalness", "empathy")) -> None:
    """Synth-Empathy Figure 5: share of samples at each 1-3 score, before vs after selection, per criterion.

    `metrics` holds the flat keys of data_quality.summarize with prefixes "before" and "after".
    """
    import numpy as np

    fig, axes = plt.subplots(1, len(criteria), figsize=(4 * len(criteria), 3.4), sharey=True)
    x = np.arange(3)
    for ax, criterion in zip(np.atleast_1d(axes), criteria, strict=True):
        for offset, stage, color in ((-0.2, "before", "#9aa5b1"), (0.2, "after", "#2f7ed8")):
            shares = [metrics.get(f"{stage}_{criterion}_score{s}_pct", 0.0) for s in (1, 2, 3)]
            mean = metrics.get(f"{stage}_{criterion}_mean")
            label = f"{stage} selection (mean {mean:.2f})" if mean is not None else f"{stage} selection (no scores)"
            ax.bar(x + offset, shares, width=0.4, color=color, label=label)
        ax.set_xticks(x, ["1", "2", "3"])
        ax.set_xlabel("score")
        ax.set_title(criterion.capitalize())
        ax.legend(fontsize=7, loc="upper left")
    np.atleast_1d(axes)[0].set_ylabel("% of judged samples")
    fig.suptitle("Judged quality of the synthetic data before and after selection", y=1.03)
    save_figure(fig, path)


def plot_split_histogram(ratings, threshold: float, path: str | os.PathLike) -> None:
    """Efficient-Empathy Figure 4: 2-D histogram of rationality (x) vs sensibility (y), 0-10 each.

    Every cell shows its count; dashed lines mark T on both axes, and the outlined corners are the
    sensibility set (R < T, S > T, top left) and the discard set (R > T, S < T, bottom right).
    `ratings` is a table with integer columns rationality and sensibility (nulls are left out).
    """
    import math

    import numpy as np
    from matplotlib.patches import Rectangle

    rated = ratings.drop_nulls(["rationality", "sensibility"])
    counts = np.zeros((11, 11), dtype=int)  # [sensibility, rationality]
    np.add.at(counts, (rated["sensibility"].to_numpy(), rated["rationality"].to_numpy()), 1)

    fig, ax = plt.subplots(figsize=(7.2, 6))
    image = ax.imshow(counts, origin="lower", cmap="viridis", extent=(-0.5, 10.5, -0.5, 10.5))
    fig.colorbar(image, ax=ax, label="samples")
    peak = counts.max() or 1
    for s in range(11):
        for r in range(11):
            ax.text(r, s, str(counts[s, r]), ha="center", va="center", fontsize=6.5, zorder=3,
                    color="black" if counts[s, r] > 0.6 * peak else "white")
    ax.axvline(threshold, color="#cccccc", linestyle=":", linewidth=1, alpha=0.7, zorder=2)
    ax.axhline(threshold, color="#cccccc", linestyle=":", linewidth=1, alpha=0.7, zorder=2)
    # Cells strictly below / above T (ties belong to the rationality set).
    below, above = math.ceil(threshold) - 1, math.floor(threshold) + 1
    for (x0, x1, y0, y1), color, label in (
        ((-0.5, below + 0.5, above - 0.5, 10.5), "#ff7f0e", "sensibility set (R < T, S > T)"),
        ((above - 0.5, 10.5, -0.5, below + 0.5), "#d62728", "discard set (R > T, S < T)"),
    ):
        if x1 > x0 and y1 > y0:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2,
                                   label=label))
    ax.set_xticks(range(11))
    ax.set_yticks(range(11))
    ax.set_xlabel("rationality score R")
    ax.set_ylabel("sensibility score S")
    ax.set_title(f"Rationality vs sensibility ({rated.height} rated samples, T = {threshold:g})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    save_figure(fig, path)


def plot_similarity_histogram(similarity, threshold: float, path: str | os.PathLike) -> None:
    """Synth-Empathy §3.2: distribution of S = 100 * cos(E_D, E_G), with the kept region S > T marked."""
    import numpy as np

    s = np.asarray(similarity, dtype=float)
    kept = int((s > threshold).sum())
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(s, bins=min(50, max(10, s.size // 20)), color="#9aa5b1", edgecolor="white")
    ax.axvline(threshold, color="#d62728", linewidth=2, label=f"T = {threshold} (kept S > T: {kept} of {s.size})")
    ax.set_xlabel("similarity S between discriminator and generated reply")
    ax.set_ylabel("generated samples")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Quality selection")
    save_figure(fig, path)


def plot_judge_agreement(table, figures: dict, path: str | os.PathLike) -> None:
    """The configured judge against the authors' ChatGPT ratings: per-score scatter, split confusion."""
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"wspace": 0.4})
    rng = np.random.default_rng(0)  # jitter only, so equal integer pairs do not hide each other
    for ax, score in zip(axes[:2], ("sensibility", "rationality"), strict=True):
        pairs = table.drop_nulls([score, f"ref_{score}"])
        x = pairs[f"ref_{score}"].to_numpy() + rng.uniform(-0.2, 0.2, pairs.height)
        y = pairs[score].to_numpy() + rng.uniform(-0.2, 0.2, pairs.height)
        ax.scatter(x, y, s=8, alpha=0.5, color="#2f7ed8")
        ax.plot([0, 10], [0, 10], color="#999999", lw=0.8, ls="--")
        rho = figures.get(f"{score}_spearman")
        rho_text = "undefined (a constant side)" if rho is None else f"{rho:.2f}"
        ax.set(xlim=(-0.5, 10.5), ylim=(-0.5, 10.5), xlabel=f"authors' ChatGPT {score}", ylabel=f"judge {score}",
               title=f"{score}\nSpearman {rho_text}, MAE {figures.get(f'{score}_mae'):.2f}")
    confusion = figures.get("split_confusion") or {}
    names = list(confusion) or ["sensibility", "rationality", "discard"]
    matrix = np.array([[confusion.get(r, {}).get(c, 0) for c in names] for r in names])
    axes[2].imshow(matrix, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            axes[2].text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=9)
    axes[2].set_xticks(range(len(names)), [f"D_{n[0]}" for n in names])
    axes[2].set_yticks(range(len(names)), [f"D_{n[0]}" for n in names])
    axes[2].set(xlabel="judge's set", ylabel="authors' set",
                title=f"split at T={figures.get('threshold'):g}\nCohen's kappa {figures.get('split_kappa')}")
    fig.suptitle(f"Judge vs the papers' ChatGPT ratings, {figures.get('n')} test items", y=1.1)
    save_figure(fig, path)
