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
_REPORT_WORDS = 3
_QUOTE_RE = re.compile(
    r'"([^"\n]{2,300})"|\u201c([^\u201c\u201d\n]{2,300})\u201d'
    # single quotes: opened after a space, a colon or a bracket, not an elision ('em, 'cause, '90s),
    # closed before a space or punctuation (so the apostrophes of "you're" and "mods'" do not count)
    r"|(?:^|(?<=[\s:(\[]))['\u2018](?!(?:em|cause|cos|til|bout|n|\d\ds?)\b)([^\n]{2,300}?)['\u2019](?=[\s.,!?;:)\]]|$)")


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


def _outside(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` without its quoted passages."""
    ends = [0, *(i for span in spans for i in span), len(text)]
    return " ".join(text[ends[k]:ends[k + 1]] for k in range(0, len(ends), 2))


def quoted_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the quoted passages of ``text``: between double quotes (straight or curly), or
    single quotes that open after a space, a colon or a bracket and close before one or punctuation
    (so the apostrophes of "you're" and "mods'" do not count)."""
    return [m.span(m.lastindex or 0) for m in _QUOTE_RE.finditer(text)]


def lexical_features(text: str) -> list[str]:
    """Features of the light model: unigrams, bigrams and 4-char grams of each word.

    Character grams give some robustness to typos ("idoit", "stupd"); bigrams
    catch phrases whose words are harmless alone ("kill yourself", "where you").
    Words inside quotes (reported speech: "he DMed me 'nobody would miss you'") also
    give ``q:`` unigrams and ``qb:`` bigrams, and a text with a quote ``x:quote``, so the model can
    weigh abuse quoted in a report apart from abuse said to someone; only where the words outside
    the quotes could frame a report (``_REPORT_WORDS`` or more), so that quoting a whole attack, or
    prefixing it with "he said", does not hide it.
    """
    toks = words(text)
    feats = [f"w:{t}" for t in toks]
    feats += [f"b:{a}_{b}" for a, b in itertools.pairwise(toks)]
    for t in toks:
        padded = f"<{t}>"
        if len(padded) >= 5:
            feats += [f"c:{padded[i:i + 4]}" for i in range(len(padded) - 3)]
    spans = quoted_spans(text)
    if spans and len(words(_outside(text, spans))) >= _REPORT_WORDS:
        feats.append("x:quote")
        for start, end in spans:
            quoted = words(text[start:end])
            feats += [f"q:{t}" for t in quoted]
            feats += [f"qb:{a}_{b}" for a, b in itertools.pairwise(quoted)]
    return feats


def split_sentences(text: str) -> list[str]:
    """Split on sentence-ending punctuation and newlines; never returns empty pieces."""
    parts = [p.strip() for p in _SENT_RE.split(text)]
    return [p for p in parts if p] or [text]
