"""The model in use: the active stored model (``moderation_models``), else the shipped heads.

Workers load it at start and whenever :func:`db.learning.active_version` changes; the retrain
command loads it to compare a new model with. One function for both, so they always agree.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from db import learning

if TYPE_CHECKING:
    import asyncpg

    from moderation.scorers import Scorer


class KindMismatch(Exception):
    """The active model was trained for another scorer kind than the one configured."""


def encoder_of(scorer: Scorer | None) -> Any:
    """The loaded MiniLM encoder inside ``scorer`` (itself, a stacked blend's or a cascade's embedded head, or a
    blend's part), to reuse; else None."""
    for part in [scorer, getattr(scorer, "embedded", None), *getattr(scorer, "parts", [])]:
        encoder = getattr(part, "encoder", None)
        if encoder is not None:
            return encoder
    return None


async def load_active(pool: asyncpg.Pool, kind: str, version: str | None, *, current: Scorer | None = None,
                      backend: str | None = None, cache_dir: str | None = None,
                      second_band: float | None = None) -> Scorer:
    """The scorer of model ``version`` (None: the shipped heads) for scorer ``kind``, loaded in a thread,
    reusing ``current``'s encoder. Raises :class:`KindMismatch` when the model is for another kind."""
    from moderation.scorers import load_scorer, shipped_bundle

    if version is None:
        model_kind, bundle = kind, shipped_bundle()
    else:
        model_kind, bundle = await learning.load_bundle(pool, version)
    if model_kind != kind:
        raise KindMismatch(f"model {version} is for scorer {model_kind!r}, not {kind!r}")
    return await asyncio.to_thread(load_scorer, kind, bundle=bundle, encoder=encoder_of(current),
                                   embedded_backend=backend, model_cache=cache_dir, second_band=second_band)
