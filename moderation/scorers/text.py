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
# Reported speech is introduced by a reporting word; any other words around a quote ("lol ok fine 'you are
# worthless'") do not make it a report, so they must not unlock the quoted-speech features (an evasion).
_REPORT_WINDOW = 4
_REPORTING = frozenset({
    "said", "says", "saying", "told", "tells", "telling", "wrote", "writes", "writing", "sent", "sends", "sending",
    "messaged", "messages", "message", "dmed", "dm'd", "dm", "dms", "texted", "texts", "text", "commented",
    "comments", "comment", "replied", "replies", "reply", "responded", "posted", "posts", "post", "called",
    "calls", "calling", "shouted", "yelled", "screamed", "typed", "tweeted", "captioned", "asked", "quote",
    "quoted", "quoting", "reported", "report", "reporting", "screenshot", "screenshots",
})
_QUOTE_RE = re.compile(
    r'"([^"\n]{2,300})"|\u201c([^\u201c\u201d\n]{2,300})\u201d'
    # single quotes: opened after a space, a colon or a bracket, not an elision ('em, 'cause, '90s),
    # closed before a space or punctuation (so the apostrophes of "you're" and "mods'" do not count)
    r"|(?:^|(?<=[\s:(\[]))['\u2018](?!(?i:em|cause|cos|cuz|coz|til|tis|twas|bout|n|\d\ds?)\b)([^\n]{2,300}?)['\u2019](?=[\s.,!?;:)\]]|$)")


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


def _reported(text: str, start: int, end: int) -> bool:
    """Whether the quoted passage ``text[start:end]`` is reported speech: a reporting word ("said",
    "DMed", "commented"...) among the few words just before it, or just after it ("... was the reply")."""
    before, after = words(text[max(0, start - 60):start])[-_REPORT_WINDOW:], words(text[end:end + 40])
    return not _REPORTING.isdisjoint(before) or not _REPORTING.isdisjoint(after[:_REPORT_WINDOW])


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
    weigh abuse quoted in a report apart from abuse said to someone; only where a reporting word
    stands next to the quote (``_reported``), so that quoting a whole attack, or padding it with
    other words, does not hide it.
    """
    toks = words(text)
    feats = [f"w:{t}" for t in toks]
    feats += [f"b:{a}_{b}" for a, b in itertools.pairwise(toks)]
    for t in toks:
        padded = f"<{t}>"
        if len(padded) >= 5:
            feats += [f"c:{padded[i:i + 4]}" for i in range(len(padded) - 3)]
    reported = [(start, end) for start, end in quoted_spans(text) if _reported(text, start, end)]
    if reported:  # each passage on its own: a reported quote elsewhere must not cover an attack
        feats.append("x:quote")
        for start, end in reported:
            quoted = words(text[start:end])
            feats += [f"q:{t}" for t in quoted]
            feats += [f"qb:{a}_{b}" for a, b in itertools.pairwise(quoted)]
    return feats


def split_sentences(text: str) -> list[str]:
    """Split on sentence-ending punctuation and newlines; never returns empty pieces."""
    parts = [p.strip() for p in _SENT_RE.split(text)]
    return [p for p in parts if p] or [text]
