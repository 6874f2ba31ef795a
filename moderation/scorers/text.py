"""Pure-Python text helpers: normalisation, lexical features, sentence splitting."""

from __future__ import annotations

import itertools
import re
import unicodedata

# Leetspeak and symbol substitutions users type to dodge word filters
# ("f*ck", "sh1t", "@ss"): folding them lets the lexical model see the word.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_WORD_RE = re.compile(r"[a-z0-9@$!*']+")
_SENT_RE = re.compile(r"(?<=[.!?…])\s+|\n+")
_REPEAT_RE = re.compile(r"(.)\1{2,}")


def normalise(text: str) -> str:
    """Lower-case, strip accents and squeeze letters repeated 3+ times ("soooo" -> "soo")."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _REPEAT_RE.sub(r"\1\1", text.lower())


def words(text: str) -> list[str]:
    """Word tokens after normalisation, with leetspeak folded and masking stars removed."""
    out = []
    for raw in _WORD_RE.findall(normalise(text)):
        tok = raw.strip("'!")
        if not tok:
            continue
        if not tok.isdigit():
            tok = tok.translate(_LEET).replace("*", "u")  # "f*ck" -> "fuck"
        out.append(tok)
    return out


def lexical_features(text: str) -> list[str]:
    """Features of the light model: unigrams, bigrams and 4-char grams of each word.

    Character grams give some robustness to typos ("idoit", "stupd"); bigrams
    catch phrases whose words are harmless alone ("kill yourself", "where you").
    """
    toks = words(text)
    feats = [f"w:{t}" for t in toks]
    feats += [f"b:{a}_{b}" for a, b in itertools.pairwise(toks)]
    for t in toks:
        padded = f"<{t}>"
        if len(padded) >= 5:
            feats += [f"c:{padded[i:i + 4]}" for i in range(len(padded) - 3)]
    return feats


def split_sentences(text: str) -> list[str]:
    """Split on sentence-ending punctuation and newlines; never returns empty pieces."""
    parts = [p.strip() for p in _SENT_RE.split(text)]
    return [p for p in parts if p] or [text]
