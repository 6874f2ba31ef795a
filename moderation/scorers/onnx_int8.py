"""Row-wise int8 MiniLM for ONNX Runtime, derived once from the cached fp32 export.

Every MatMul of the encoder with a constant weight (Q, K, V, attention output, FFN up and down:
36 of them) becomes ORT's ``MatMulIntegerToFloat`` on int8 operands, where

- weights are int8, symmetric, one scale per output column (on an x86 CPU without VNNI stored as uint8 with
  zero point 128, the same integers: :func:`unsigned_weights`);
- activations are quantised **per row**, i.e. per token: each token vector gets its own scale,
  computed at run time from that vector alone (ORT's own ``DynamicQuantizeLinear`` takes one scale
  over the whole batch tensor, so a text's embedding would depend on its batch-mates). The integer
  GEMM is exact, so a text's embedding does not depend on the batch it is in (beyond the float
  rounding of the fp32 parts: attention, LayerNorm, GELU);
- the inputs fed by a LayerNorm (Q/K/V and FFN up) are smoothed first (SmoothQuant, alpha 0.6):
  a few channels of MiniLM's LayerNorm outputs are 10x the others and would set every row's scale;
  dividing channel ``k`` by ``s_k`` and multiplying weight row ``k`` by ``s_k`` leaves the product
  unchanged and spreads the range. The factors come from activation maxima over
  :data:`CALIBRATION_TEXTS` (fixed, part of the cache key);
- the FFN down-projection reads GELU outputs, which are never below -0.17: they are shifted by
  +0.17 and quantised unsigned (twice the resolution of a symmetric code); the shift times the
  weights' column sums is taken off the layer's bias.

Measured on the 333 texts of ``data/eval.jsonl``: cosine to the fp32 embedding 0.9991 on average
(min 0.9976); ORT's per-tensor dynamic int8 (``quantize_dynamic``) reaches 0.991 and is batch
dependent. See README "Speed".
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ScorerLoadError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Sequence

QUANTIZE_MODE = "int8-rowwise"
"""The ``encoder.quantize`` value of heads trained on (and run with) this encoder."""
INT8_RECIPE = "rowwise-int8/u8zp128-s8col/smooth0.6-ln/gelu-shift0.17/v1"
"""Bump when the quantised graph changes: it is part of the cache key."""
SMOOTH_ALPHA = 0.6
GELU_SHIFT = 0.17
"""GELU(x) = x * Phi(x) >= -0.16997 for every x: shifted by this, its outputs are >= 0."""
PROBE_MIN_COSINE = 0.99
"""Min cosine int8 vs fp32 per probe text accepted when validating a quantised export (measured >= 0.997)."""
CALIBRATION_TEXTS = (
    # 32 hand-written training texts (data/written, every 117th from the 8th): short and long, kind and
    # abusive, emoji; frozen here so that the quantised model never depends on files that may change.
    "Back in the casino in my head all day. I haven't gone yet.",
    "First week back at work after burnout leave. Tired but I did it.",
    "As an Indigenous woman I'd love practitioners trained in culturally safe care.",
    "Your eyes in that last photo, wow. Okay I'll stop being cheesy now.",
    "Wow, rejected by a 5/10 with a lazy eye. You should've been grateful.",
    "Send me a pic of your tits and I'll decide if you're worth a drink",
    "not a fan of the 'no pain no gain' posts here. pain is a signal, not a goal",
    "take off the shirt next time, we want to see more",
    "I'm blind and run with a guide, we're training for a half. AMA",
    "Deaf parent here. Does anyone know if the baby sensory class has captions on the video bits?",
    "oh honey, no. just no. delete this before more people see it",
    "Is it normal that an advisor on SoulSeer told me 'your family will die if you don't buy the premium "
    "reading'? That felt like a threat tbh.",
    "my reader said my grandma's spirit is 'watching over me with a wooden spoon' and honestly that's exactly "
    "her 😂",
    "Yeah this is the guy. Spam his posts till he deletes.",
    "People ask what 'r*tarded' meant when they yelled it at my brother. He's 19 and has Down syndrome. It "
    "means they're cruel, that's what.",
    "Bi, brown and broke — the three Bs of my twenties 😅 getting better on the last one at least",
    "Love how this app is now full of 'new Europeans'. Remigration when?",
    "We're going to have to agree to disagree on screen time. My kids have tablets and they're fine, your "
    "kids don't and they're fine. Both fine!",
    "Huge thanks to whoever handed in my purse at the leisure centre. Faith in humanity restored",
    "I admire your commitment to parenting advice given how your kids turned out.",
    "Came out to my parents on Sunday and they told me not to come home. I keep looking at the pills in the "
    "cupboard",
    "As a Catholic I'm a bit wary of tarot, is that silly? I'm curious anyway",
    "Can we move it to Sunday? Got called in to work",
    "Autistic people can't really love, they just mimic it. Trust me.",
    "I wrote letters to my kids. just in case.",
    "ace 👍",
    "He calls me his 'old girl' and I call him 'old man' and we've been married 52 years. Happy anniversary "
    "to us",
    "Not being funny but have you considered people avoid you because you're just unpleasant?",
    "With this illness I'm a burden on everyone. I've been looking up how many of my tablets would be enough.",
    "ur gonna crush it, go slay",
    "same time tmrw?",
    "skinny fat lol nice try",
)


@functools.cache
def _cpuinfo() -> str | None:
    """``/proc/cpuinfo``, read once per process (None where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def has_vnni(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU has VNNI int8 dot products (``avx512_vnni``, ``avx_vnni`` or AMX); None where
    ``/proc/cpuinfo`` lists no x86 flags (another OS or architecture: unknown).

    Without VNNI, ONNX Runtime's u8 x s8 integer GEMM adds pairs of products in 16 bits, which saturate for
    large activations times large weights: with signed weights the int8 embeddings stayed within cosine 0.99 of fp32
    only (measured on an AMD EPYC with AVX2 only: mean 0.996, min 0.991 over ``data/eval.jsonl``), against 0.9991 and
    0.9976 with VNNI, and the heads were trained on the exact products. So such a CPU gets unsigned weights
    (:func:`unsigned_weights`: mean 0.9992, min 0.9980 there)."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
        if cpuinfo is None:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return None
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


@functools.cache
def warn_without_vnni() -> None:
    """Log once per process that this CPU lacks VNNI (see :func:`has_vnni`): the int8 encoders use the unsigned
    weight code, and the scorer runs at a fraction of the speed measured on CPUs with VNNI."""
    if has_vnni() is False:
        log.warning("this CPU has no VNNI int8 instructions: the int8 encoders store their weights unsigned (exact "
                    "products, a separate cached model) and the scorer ran at 0.2-0.4x the speed measured with VNNI "
                    "on such a CPU; see the README, Moderation, Speed")


def unsigned_weights() -> bool:
    """Whether this CPU's int8 exports store the weights as uint8 with zero point 128 (on an x86 CPU without VNNI).

    The products are the same integers either way, but ONNX Runtime multiplies u8 by u8 in 32 bits and u8 by s8,
    without VNNI, in saturating 16-bit pairs (:func:`has_vnni`); so on such a CPU the unsigned code keeps the
    embeddings equal to those the heads were trained on."""
    return has_vnni() is False


def recipe_tag(unsigned: bool | None = None) -> str:
    """``int8-rowwise-<digest of the recipe and the calibration texts>``: names the int8 embeddings, plus ``-u8w``
    for the unsigned weight code (``unsigned``; None: this CPU's, :func:`unsigned_weights`), a file of its own."""
    h = hashlib.sha256("\n".join((INT8_RECIPE, *CALIBRATION_TEXTS)).encode()).hexdigest()[:12]
    unsigned = unsigned_weights() if unsigned is None else unsigned
    return f"{QUANTIZE_MODE}-{h}" + ("-u8w" if unsigned else "")


def int8_path(fp32_path: Path, unsigned: bool | None = None) -> Path:
    """Cache file of the int8 model derived from the fp32 export ``fp32_path`` (may not exist yet)."""
    return fp32_path.with_name(f"{fp32_path.stem}-{recipe_tag(unsigned)}.onnx")


def quantize_export(fp32_path: Path, tokenizer: Any, target: Path, unsigned: bool | None = None) -> None:
    """Write the row-wise int8 model of ``fp32_path`` to ``target`` atomically, after checking it; ``unsigned``:
    the weight code (None: this CPU's, :func:`unsigned_weights`).

    Takes a few seconds: shape inference, one fp32 pass over the calibration texts, the rewrite.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))  # shapes let ORT fuse LayerNorms
    plan = _plan(model)
    act_max = _calibrate(model, plan, tokenizer)
    _rewrite(model, plan, act_max, unsigned_weights() if unsigned is None else unsigned)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        _check(Path(tmp), fp32_path, tokenizer)
        from .onnx_encoder import publish

        publish(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Input:
    """One activation tensor feeding weight MatMuls (Q, K and V share one), and how it is quantised."""

    def __init__(self, name: str, matmuls: list[Any], kind: str) -> None:
        self.name, self.matmuls, self.kind = name, matmuls, kind
        """``kind``: "smooth" (fed by a LayerNorm), "gelu" (non-negative after the shift) or "plain"."""


def _plan(model: Any) -> list[_Input]:
    """The activations to quantise, in graph order, with their weight MatMuls."""
    g = model.graph
    weights = {i.name for i in g.initializer if len(i.dims) == 2}
    producer = {out: n for n in g.node for out in n.output}
    by_input: dict[str, list[Any]] = {}
    for n in g.node:
        if n.op_type == "MatMul" and n.input[1] in weights:
            by_input.setdefault(n.input[0], []).append(n)
    if len(by_input) < 4:
        raise ScorerLoadError(f"unexpected graph for int8: {len(by_input)} weight MatMul inputs")

    def near_erf(name: str, depth: int = 4) -> bool:  # GELU as exported: Mul(Mul(x, Add(Erf(Div(x)), 1)), 0.5)
        node = producer.get(name)
        if node is None:
            return False
        return node.op_type == "Erf" or (depth > 0 and any(near_erf(i, depth - 1) for i in node.input))

    plan = []
    for name, matmuls in by_input.items():
        node = producer.get(name)
        kind = ("smooth" if node is not None and node.op_type == "LayerNormalization"
                else "gelu" if near_erf(name) else "plain")
        plan.append(_Input(name, matmuls, kind))
    erfs = sum(n.op_type == "Erf" for n in g.node)
    if sum(p.kind == "gelu" for p in plan) != erfs:
        raise ScorerLoadError(f"unexpected graph for int8: {erfs} GELUs but not as many GELU-fed MatMuls")
    return plan


def _calibrate(model: Any, plan: Sequence[_Input], tokenizer: Any) -> dict[str, Any]:
    """Per-channel max |activation| of the smoothed inputs over the calibration texts (real tokens only)."""
    import numpy as np
    import onnx

    from .onnx_encoder import new_session

    names = [p.name for p in plan if p.kind == "smooth"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = new_session(probe.SerializeToString(), threads=1)
    enc = tokenizer(list(CALIBRATION_TEXTS), padding=True, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    outs = session.run(names, {"input_ids": ids, "attention_mask": mask})
    real = mask.astype(bool)
    return {n: np.abs(o[real]).max(axis=0) for n, o in zip(names, outs, strict=True)}


def _rewrite(model: Any, plan: Sequence[_Input], act_max: dict[str, Any], unsigned: bool = False) -> None:
    """Replace each planned MatMul with the row-wise int8 subgraph (in place); ``unsigned``: store each weight
    ``w`` as the uint8 ``w + 128`` with zero point 128 (the same products, see :func:`unsigned_weights`)."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    new_inits: list[Any] = []

    def const(name: str, value: Any) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    const("i8/eps", np.float32(1e-12))
    const("i8/one", np.float32(1.0))
    const("i8/zp128", np.uint8(128))
    const("i8/zp0", np.uint8(0))
    const("i8/zp128v", np.array([128], np.uint8))
    const("i8/zp0v", np.array([0], np.uint8))
    const("i8/0", np.array([0], np.int64))
    const("i8/-1", np.array([-1], np.int64))
    replaced: dict[str, list[Any]] = {}  # output of an input's first MatMul -> the nodes replacing its group
    gone_nodes: set[str] = set()  # outputs of the group's other MatMuls (an ONNX output has one producer)
    gone_weights: set[str] = set()
    for k, inp in enumerate(plan):
        p, x = f"i8/{k}", inp.name
        weights = [numpy_helper.to_array(inits[m.input[1]]).astype(np.float64) for m in inp.matmuls]
        dim = weights[0].shape[0]
        nodes = [helper.make_node("Shape", [x], [p + "/shape"]),
                 helper.make_node("Slice", [p + "/shape", "i8/0", "i8/-1"], [p + "/lead"])]
        src, smooth = x, None
        if inp.kind == "smooth":
            w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
            s = np.maximum(act_max[x], 1e-5) ** SMOOTH_ALPHA / np.maximum(w_max, 1e-5) ** (1 - SMOOTH_ALPHA)
            # Rounded to ~3 digits, so that float noise of the calibration pass on another CPU rarely moves them.
            smooth = np.clip(s, 1e-3, 1e3).astype(np.float16).astype(np.float64)
            nodes.append(helper.make_node("Mul", [x, const(p + "/inv_s", (1 / smooth).astype(np.float32))],
                                          [p + "/xs"]))
            src = p + "/xs"
        if inp.kind == "gelu":
            nodes.append(helper.make_node("Add", [x, const(p + "/shift", np.float32(GELU_SHIFT))], [p + "/xs"]))
            src = p + "/xs"
        nodes.append(helper.make_node("Reshape", [src, const(p + "/rows", np.array([-1, dim], np.int64))],
                                      [p + "/x2"]))
        if inp.kind == "gelu":  # non-negative: unsigned code 0..255, zero point 0
            nodes.append(helper.make_node("ReduceMax", [p + "/x2"], [p + "/amax"], axes=[1], keepdims=1))
            levels, zp, zpv = 255.0, "i8/zp0", "i8/zp0v"
        else:  # symmetric code -127..127 stored as uint8 with zero point 128
            nodes += [helper.make_node("Abs", [p + "/x2"], [p + "/abs"]),
                      helper.make_node("ReduceMax", [p + "/abs"], [p + "/amax"], axes=[1], keepdims=1)]
            levels, zp, zpv = 127.0, "i8/zp128", "i8/zp128v"
        nodes += [
            helper.make_node("Max", [p + "/amax", "i8/eps"], [p + "/amax_"]),
            helper.make_node("Mul", [p + "/amax_", const(p + "/step", np.float32(1 / levels))], [p + "/scale"]),
            helper.make_node("Reshape", [p + "/scale", "i8/-1"], [p + "/scale1"]),
            helper.make_node("Shape", [p + "/scale1"], [p + "/m"]),
            helper.make_node("Expand", [zpv, p + "/m"], [p + "/zps"]),
            helper.make_node("QuantizeLinear", [p + "/x2", p + "/scale1", p + "/zps"], [p + "/q"], axis=0),
        ]
        for j, (m, w_fp) in enumerate(zip(inp.matmuls, weights, strict=True)):
            w = w_fp * smooth[:, None] if smooth is not None else w_fp
            col = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
            wq = np.clip(np.round(w / col), -127, 127).astype(np.int8)
            o, q = m.output[0], f"{p}/{j}"
            stored, w_zp = (wq, []) if not unsigned else ((wq.astype(np.int16) + 128).astype(np.uint8), ["i8/zp128"])
            nodes += [
                helper.make_node("MatMulIntegerToFloat",
                                 [p + "/q", const(q + "/w", stored), "i8/one",
                                  const(q + "/col", col.astype(np.float32)), zp, *w_zp], [q + "/y"],
                                 domain="com.microsoft"),
                helper.make_node("Mul", [q + "/y", p + "/scale"], [q + "/ys"]),
                helper.make_node("Concat", [p + "/lead", const(q + "/n", np.array([wq.shape[1]], np.int64))],
                                 [q + "/shape"], axis=0),
                helper.make_node("Reshape", [q + "/ys", q + "/shape"], [o]),
            ]
            if inp.kind == "gelu":  # (x + shift) @ W = x @ W + shift * colsum(W): take it off the bias
                _fold_into_bias(g, inits, consumers, o, GELU_SHIFT * (wq.astype(np.float64) * col).sum(axis=0))
            if len(consumers[m.input[1]]) == 1:
                gone_weights.add(m.input[1])
        replaced[inp.matmuls[0].output[0]] = nodes
        gone_nodes.update(m.output[0] for m in inp.matmuls[1:])
    out = []
    for n in g.node:
        key = n.output[0] if n.op_type == "MatMul" else ""
        if key in replaced:
            out += replaced[key]
        elif key not in gone_nodes:
            out.append(n)
    del g.node[:]
    g.node.extend(out)
    keep = [i for i in g.initializer if i.name not in gone_weights]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _fold_into_bias(g: Any, inits: dict[str, Any], consumers: dict[str, list[Any]], out: str, corr: Any) -> None:
    """Subtract ``corr`` from the constant bias that the MatMul output ``out`` is added to."""
    import numpy as np
    from onnx import numpy_helper

    for n in consumers.get(out, []):
        if n.op_type == "Add":
            bias = [i for i in n.input if i in inits and len(inits[i].dims) == 1]
            if bias and len(consumers.get(bias[0], [])) == 1:
                b = inits[bias[0]]
                b.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(b) - corr).astype(np.float32), b.name))
                return
    raise ScorerLoadError(f"int8 export: no private bias after {out} to fold the GELU shift into")


def _check(int8: Path, fp32: Path, tokenizer: Any) -> None:
    """Raise ScorerLoadError unless each probe text's int8 embedding is close to fp32 (cosine)."""
    import numpy as np

    from .onnx_encoder import PROBE_TEXTS, new_session

    enc = tokenizer([*PROBE_TEXTS, *CALIBRATION_TEXTS[:5]], padding=True, return_tensors="np")
    feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    want = new_session(str(fp32), threads=1).run(None, feed)[0]
    got = new_session(str(int8), threads=1).run(None, feed)[0]
    cos = (want * got).sum(axis=1) / np.maximum(np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    if not float(cos.min()) >= PROBE_MIN_COSINE:
        raise ScorerLoadError(f"int8 MiniLM disagrees with fp32: cosine {float(cos.min()):.4f} (< {PROBE_MIN_COSINE})")
