"""``quant=auto``: per tensor kind the types (q4, q8, fp32) that fit the target and lose the least.

The choice is greedy on each choice's measured damage: the mean KL divergence from fp32 of the model's
next-token distribution when only that kind's matrices have that type, over the calibration text (the
fp32 model in float32 with the kind's dequantized weights, llmcu.model.calibration.log_probs). Damages of different
kinds add up nearly (stories260K q4: the kinds' KLs sum to 0.033, the whole model's is 0.036), so the KL of a mix
is estimated as their sum. Starting from the smallest mix (everything q4z), the upgrade (q4z -> q8 or q8 -> fp32
of one kind) with the largest drop of estimated KL per extra byte is taken, as long as the result still fits:
weights within ``budget=`` and every firmware image's memory plan (the caller's ``fits``). The model is
quantized once per kind and type; every mix is assembled from those. (Activations quantized to int8, which the
kernels add, are left out of the estimate: they cost the same in every mix.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.config import MATRIX_KINDS
from ..model.calibration import collect, log_probs, mean_kl
from ..model.checkpoint import Checkpoint
from ..model.quantize import QuantizedMatrix, QuantPlan, quantize_kind
from .memplan import FitError

# The types in order of size, smallest first. q4z is smaller than q4 (a 16-bit word per group instead of a
# 32-bit scale) and keeps the model better (a zero point per group), so q4 is never the better choice here.
LADDER = ("q4z", "q8", "fp32")


@dataclass
class AutoChoice:
    """The chosen plan, its quantized matrices, and the lines that say why."""

    plan: QuantPlan
    quantized: dict[str, QuantizedMatrix]
    steps: list[str] = field(default_factory=list)


def choose(
    ckpt: Checkpoint,
    base: QuantPlan,
    calibration: object,
    weight_bytes: Callable[[dict[str, QuantizedMatrix]], int],
    fits: Callable[[QuantPlan, dict[str, QuantizedMatrix]], str | None],
    budget: int = 0,
    progress: Callable[[int], None] | None = None,
) -> AutoChoice:
    """The least damaging mix that fits. ``calibration`` (or None) steers the fit and gives the text damage is
    measured on; ``weight_bytes`` sizes a mix as the build lays it out; ``fits`` returns None when a mix fits
    the target, else why not (the planner's words)."""
    weights = ckpt.weights
    kinds = [kind for kind in MATRIX_KINDS if kind in weights]
    text = calibration if calibration is not None else collect(ckpt)
    fp32 = log_probs(ckpt, text.sequences)  # type: ignore[attr-defined]
    cache: dict[tuple[str, str], QuantizedMatrix] = {}
    damage: dict[tuple[str, str], float] = {}

    def matrix(kind: str, qtype: str) -> QuantizedMatrix:
        if (kind, qtype) not in cache:
            cache[kind, qtype] = quantize_kind(weights[kind], kind, qtype, base.group_size, base.fit, calibration)
            damage[kind, qtype] = 0.0
            if qtype != "fp32":
                alone = dict(weights, **{kind: cache[kind, qtype].dequantize()})
                damage[kind, qtype] = mean_kl(fp32, log_probs(replace(ckpt, weights=alone), text.sequences))  # type: ignore[attr-defined]
            if progress is not None:
                progress(1)
        return cache[kind, qtype]

    def assemble(types: dict[str, str]) -> tuple[QuantPlan, dict[str, QuantizedMatrix]]:
        # The plan's default is the type most of the weights have, so that its name is short.
        by_size = {qtype: sum(np.size(weights[k]) for k in kinds if types[k] == qtype) for qtype in LADDER}
        default = max(LADDER, key=lambda qtype: by_size[qtype])
        return base.with_types(default, types), {kind: matrix(kind, types[kind]) for kind in kinds}

    types = dict.fromkeys(kinds, LADDER[0])
    plan, mix = assemble(types)
    size = weight_bytes(mix)
    if budget and size > budget:
        raise FitError(
            f"budget={budget:,} is below the smallest model: with every matrix in q4z (group size "
            f"{base.group_size}) the weights take {size:,} bytes"
        )
    why_not = fits(plan, mix)
    if why_not is not None:
        raise FitError(f"quant=auto: even the smallest mix (every matrix q4z, {size:,} bytes) does not fit: {why_not}")
    for kind in kinds:
        matrix(kind, LADDER[1])  # every damage known before the first comparison
    steps = [
        f"start: every matrix q4z (group size {base.group_size}), weights {size:,} B; estimated KL "
        f"{sum(damage[k, LADDER[0]] for k in kinds):.4g} (measured on {text.tokens:,} calibration tokens)"  # type: ignore[attr-defined]
    ]
    while True:
        options = []
        for kind in kinds:
            rung = LADDER.index(types[kind])
            if rung + 1 == len(LADDER):
                continue
            upgrade = LADDER[rung + 1]
            extra = matrix(kind, upgrade).nbytes() - matrix(kind, types[kind]).nbytes()
            gain = damage[kind, types[kind]] - damage[kind, upgrade]
            options.append((gain / max(extra, 1), kind, upgrade, extra, gain))
        options.sort(key=lambda option: -option[0])
        taken = None
        refused = []
        for _, kind, upgrade, extra, gain in options:
            trial = dict(types, **{kind: upgrade})
            trial_plan, trial_mix = assemble(trial)
            trial_size = weight_bytes(trial_mix)
            if budget and trial_size > budget:
                refused.append(f"{kind} {upgrade} needs {trial_size - budget:,} B more than budget={budget:,}")
                continue
            reason = fits(trial_plan, trial_mix)
            if reason is not None:
                refused.append(f"{kind} {upgrade} does not fit ({reason.split('. ')[0]})")
                continue
            taken = (kind, upgrade, extra, gain, trial, trial_plan, trial_mix, trial_size)
            break
        if taken is None:
            if refused:
                steps.append("stop: " + "; ".join(refused[:3]) + ("; ..." if len(refused) > 3 else ""))
            else:
                steps.append("stop: every matrix is fp32")
            break
        kind, upgrade, extra, gain, types, plan, mix, size = taken
        steps.append(
            f"{kind} -> {upgrade}: +{extra:,} B (weights {size:,} B); its KL alone "
            f"{damage[kind, LADDER[LADDER.index(upgrade) - 1]]:.4g} -> {damage[kind, upgrade]:.4g}, "
            f"the most gained per byte; estimated KL of the mix {sum(damage[k, types[k]] for k in kinds):.4g}"
        )
    return AutoChoice(plan, mix, steps)
