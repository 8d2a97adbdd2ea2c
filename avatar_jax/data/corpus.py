"""The conversational text corpus for synthetic clips (paper appendix C): greetings, introductions,
transitions and engagement prompts. Original sentences written for this project, shipped as
``corpus.json`` in the package."""

from __future__ import annotations

import functools
import json
import os

CATEGORIES = ("greetings", "introductions", "transitions", "engagement")


@functools.cache
def load_corpus() -> dict[str, tuple[str, ...]]:
    with open(os.path.join(os.path.dirname(__file__), "corpus.json")) as f:
        data = json.load(f)
    return {c: tuple(data[c]) for c in CATEGORIES}


def sentences(count: int, offset: int = 0) -> list[tuple[str, str]]:
    """``count`` ``(category, sentence)`` pairs, cycling through the categories in turn (so any prefix
    mixes greetings, introductions, transitions and prompts), starting at ``offset``."""
    corpus = load_corpus()
    out = []
    for k in range(offset, offset + count):
        cat = CATEGORIES[k % len(CATEGORIES)]
        items = corpus[cat]
        out.append((cat, items[(k // len(CATEGORIES)) % len(items)]))
    return out
