"""How far a quantized model strays from fp32: greedy agreement and next-token KL divergence.

Two views, both on the Python reference (which the C builds equal token for token):

- free-running: both models generate greedily from the same prompt; how many of the generated tokens agree,
  and where the first disagreement is;
- teacher-forced: the quantized model is fed fp32's greedy sequence, and at every position its next-token
  distribution is compared with fp32's: mean KL(fp32 || quantized) and top-1 agreement.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from . import portable, quantcache
from .checkpoint import Checkpoint
from .oracle import GenerationResult, generate
from .quantize import DEFAULT_CALIBRATION, DEFAULT_FIT, QuantPlan, quantize_checkpoint
from .reference import Reference
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class QualityReport:
    quant: str
    group_size: int
    positions: int
    greedy_agreement: float  # fraction of free-running generated tokens equal to fp32's
    first_divergence: int | None  # index among generated tokens, None when all agree
    teacher_forced_top1: float
    mean_kl: float
    max_kl: float
    kv_type: str = "f32"
    fit: str = DEFAULT_FIT

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# The text quality is measured on: fp32's greedy continuations of these prompts. Calibration reads other text
# (stories the fp32 model samples from BOS, llmcu.model.calibration), so a fit cannot learn the evaluation by heart.
EVALUATION_PROMPTS = ("Once upon a time", "Sara went to the beach", "There was a big tree")
# At build time (quality= in the report): the first prompt, this many positions; models above this many
# parameters are skipped under quality=auto: the Python reference takes ~80 ms a token on stories15M, so its
# 256 forward passes would add ~20 s to every build.
BUILD_STEPS = 128
BUILD_MAX_PARAMETERS = 5_000_000


@dataclass(frozen=True)
class TeacherForced:
    positions: int
    top1: float
    mean_kl: float
    max_kl: float


def teacher_forced(baseline: GenerationResult, candidate: Reference) -> TeacherForced:
    """Feed ``candidate`` fp32's greedy sequence; compare its next-token distributions with fp32's."""
    assert baseline.logits is not None
    start = baseline.prompt_tokens
    kls, top1 = [], []
    for pos, (token, fp32_logits) in enumerate(zip(baseline.tokens, baseline.logits, strict=False)):
        q_log = _log_softmax(candidate.forward(token, pos))
        if pos + 1 < start:
            continue  # prompt positions: the next token is given, not predicted
        p_log = _log_softmax(fp32_logits)
        kls.append(float(np.sum(portable.exp(p_log) * (p_log - q_log))))
        top1.append(int(np.argmax(p_log)) == int(np.argmax(q_log)))
    return TeacherForced(
        positions=len(kls),
        top1=float(np.mean(top1)) if top1 else 1.0,
        mean_kl=float(np.mean(kls)) if kls else 0.0,
        max_kl=float(np.max(kls)) if kls else 0.0,
    )


def build_quality(ckpt: Checkpoint, tok: Tokenizer, quantized: dict, kv_type: str = "f32") -> dict[str, object]:
    """What a build's quant_report gives: teacher-forced top-1 and mean KL against fp32 on the evaluation text.
    The quantized model is the contract's (llmcu.model.reference); fp32's greedy run and logits come from the
    batched float32 forward pass of llmcu.model.calibration, 10x faster and equal to the last bits that a
    distribution's KL does not see (tools/quant_quality.py uses the contract's fp32 too)."""
    from .calibration import greedy, weights_digest

    matrices = [quantized[name] for name in sorted(quantized)]
    key = quantcache.measurement_key(
        "quality", weights_digest(ckpt), hashlib.sha256(tok.to_bytes()).hexdigest(),
        f"space_prefix={tok.add_space_prefix} bos={tok.add_bos} kv_type={kv_type}",
        " ".join(f"{name}:{quantized[name].qtype}/{quantized[name].group_size}" for name in sorted(quantized)),
        quantcache.array_digest(*(array for m in matrices for array in (m.q, m.scales, m.zeros))),
    )  # fmt: skip
    cached = quantcache.load_arrays(key)
    if cached is not None and "quality" in cached:
        return json.loads(str(cached["quality"]))
    steps = min(BUILD_STEPS, ckpt.config.seq_len)
    prompt = tok.encode_prompt(EVALUATION_PROMPTS[0])
    tokens, logits = greedy(ckpt, prompt, steps)
    baseline = GenerationResult(b"", tokens, len(prompt), logits)
    result = teacher_forced(baseline, Reference(ckpt, quantized, kv_type=kv_type))
    measured = {"prompt": EVALUATION_PROMPTS[0], **asdict(result)}
    quantcache.store_arrays(key, {"quality": np.array(json.dumps(measured))})
    return measured


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    return portable.log_softmax(logits)


def fp32_baseline(
    ckpt: Checkpoint, tok: Tokenizer, prompt: str = "Once upon a time", steps: int = 256
) -> GenerationResult:
    """fp32's greedy run from ``prompt``, with its logits: what :func:`compare` measures against."""
    return generate(Reference.from_checkpoint(ckpt, "fp32"), tok, prompt, steps, 0.0, 0.9, 1, keep_logits=True)


def compare(
    ckpt: Checkpoint,
    tok: Tokenizer,
    quant: str,
    group_size: int = 32,
    overrides: dict[str, str] | None = None,
    prompt: str = "Once upon a time",
    steps: int = 256,
    kv_type: str = "f32",
    baseline: GenerationResult | None = None,
    fit: str = DEFAULT_FIT,
    calibration: str = DEFAULT_CALIBRATION,
) -> QualityReport:
    """Compare ``quant`` (with a ``kv_type`` KV cache) with fp32 over a ``steps``-token greedy run from ``prompt``.

    ``baseline`` is fp32's run (:func:`fp32_baseline`) when several comparisons share it.
    """
    if baseline is None:
        baseline = fp32_baseline(ckpt, tok, prompt, steps)
    plan = QuantPlan(quant, group_size, tuple((overrides or {}).items()), fit, calibration)
    quantized = quantize_checkpoint(ckpt, plan, tok)
    candidate = generate(Reference(ckpt, quantized, kv_type=kv_type), tok, prompt, steps, 0.0, 0.9, 1)

    start = baseline.prompt_tokens
    ours, theirs = baseline.tokens[start:], candidate.tokens[start:]
    agreeing = sum(a == b for a, b in zip(ours, theirs, strict=False))
    divergence = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    if divergence is None and len(ours) != len(theirs):
        divergence = min(len(ours), len(theirs))

    # Teacher forcing: the quantized model reads fp32's greedy sequence; fp32's own logits along that
    # sequence are the ones it produced while generating it.
    forced = teacher_forced(baseline, Reference(ckpt, quantized, kv_type=kv_type))
    return QualityReport(
        quant=quant,
        group_size=group_size,
        positions=forced.positions,
        greedy_agreement=agreeing / max(len(ours), 1),
        first_divergence=divergence,
        teacher_forced_top1=forced.top1,
        mean_kl=forced.mean_kl,
        max_kl=forced.max_kl,
        kv_type=kv_type,
        fit=fit,
    )
