"""Near-duplicate texts by MinHash LSH over word shingles (datasketch).

Many stories sampled from one situation retell it in nearly the same words; the SYNTHEMPATHY
recipe keeps one of each such group. A text's fingerprint is the MinHash of its word n-grams
(lower-cased words, `shingle_words` at a time); MinHashLSH finds the earlier texts whose estimated
Jaccard similarity may reach `threshold`, and each candidate's estimate is then checked, so a
banding false positive never drops a text. The first text of a group is kept, in input order.
Everything is seeded (datasketch's sha1 hashing, MinHash seed 1): the same texts give the same
answer in every process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from empathy_pipeline.core.errors import PipelineError

_WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
MINHASH_SEED = 1  # datasketch's default, fixed here so a library default change cannot move results


def word_shingles(text: str, size: int) -> set[bytes]:
    """The set of `size`-word n-grams of the lower-cased words; a shorter text is one shingle of all its words."""
    words = _WORD_RE.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


def near_duplicates(texts: Sequence[str], *, threshold: float, num_perm: int, shingle_words: int) -> list[int | None]:
    """For each text, the index of the earlier kept text it nearly duplicates, or None when it is kept.

    Near duplicate: estimated Jaccard similarity of the word shingles >= threshold (an estimate
    from `num_perm` permutations; its standard error is about 1/sqrt(num_perm)).
    """
    from datasketch import MinHash, MinHashLSH

    if not 0 < threshold < 1:  # datasketch's banding needs at least two bands, which 1.0 leaves none of
        raise PipelineError(f"near-duplicate threshold must be in (0, 1), got {threshold}")
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[int, MinHash] = {}
    out: list[int | None] = []
    for i, text in enumerate(texts):
        signature = MinHash(num_perm=num_perm, seed=MINHASH_SEED)
        signature.update_batch(sorted(word_shingles(text, shingle_words)))
        matches = sorted(j for j in lsh.query(signature) if kept[j].jaccard(signature) >= threshold)
        if matches:
            out.append(matches[0])
        else:
            lsh.insert(i, signature)
            kept[i] = signature
            out.append(None)
    return out
