"""Word tokenisation as nltk's word_tokenize does it, without the punkt data no registry ships.

word_tokenize = punkt sentence split + NLTKWordTokenizer per sentence. An untrained
PunktSentenceTokenizer needs no data files and splits ED's plain sentences the same way
(we give it the common abbreviations it would have learned), so the tokens match the papers' files.
"""

from __future__ import annotations

from functools import lru_cache

# The few abbreviations of the trained English punkt model that ED text actually uses; with them the
# papers' test file is reproduced for all but a handful of samples (see tests/data/test_prepare.py).
_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "vs", "st", "jr", "sr", "etc", "ok", "e.g", "i.e", "u.s")


@lru_cache(maxsize=1)
def _tokenizers():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(_ABBREVIATIONS)
    return PunktSentenceTokenizer(params), NLTKWordTokenizer()


def tokenize_words(text: str) -> list[str]:
    sentences, words = _tokenizers()
    return [tok for sentence in sentences.tokenize(text) for tok in words.tokenize(sentence)]
