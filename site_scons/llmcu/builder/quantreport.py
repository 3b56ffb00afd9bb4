"""quant_report.json and quant_report.md: what a build's quantization is (the plan, the fit, what quant=auto chose and
why), what it costs (weights, tokenizer, KV cache) and what it loses against fp32 (quality, and per tensor the
errors), from the generated model (llmcu.builder.codegen)."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.fileio import write_text_atomic
from .codegen import GeneratedModel


def write_quant_report(model: GeneratedModel, json_path: str | Path, markdown_path: str | Path) -> None:
    """The per-tensor quantization report as JSON and as a Markdown table."""
    rows = [report.as_dict() for report in model.reports]
    plan = model.plan
    summary = {
        "quant": plan.name,
        "group_size": plan.group_size,
        "default": plan.default,
        "overrides": dict(plan.overrides),
        "fit": plan.fit,
        "calibration": plan.calibration,
        "quality": model.quality,
        "quality_note": model.quality_note,
        "auto_steps": list(model.auto_steps),
        "source_notes": list(model.source_notes),
        "weight_bytes": model.weight_bytes(),
        "tokenizer_bytes": model.tokenizer_bytes(),
        "kv_type": model.kv_type,
        "kv_cache_bytes": model.kv_cache_bytes(),
        "tensors": rows,
    }
    write_text_atomic(json_path, json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Quantization report: {model.plan.name}, group size {model.plan.group_size}",
        "",
        f"Weights {model.weight_bytes():,} bytes, tokenizer {model.tokenizer_bytes():,} bytes, "
        f"KV cache {model.kv_cache_bytes():,} bytes ({model.kv_type}).",
        f"Fit: {plan.fit}" + (f", calibrated on {plan.calibration}" if plan.calibrated else "") + ".",
        "",
    ]
    if model.quality is not None:
        q = model.quality
        lines += [
            f"Quality against fp32, teacher-forced on fp32's greedy continuation of {q['prompt']!r} "
            f"({q['positions']} positions): top-1 agreement {q['top1']:.3f}, mean KL {q['mean_kl']:.5f}, "
            f"max KL {q['max_kl']:.4f}.",
            "",
        ]
    elif model.quality_note:
        lines += [f"Quality: {model.quality_note}", ""]
    if model.source_notes:
        lines += ["## The source file", "", *[f"- {note}" for note in model.source_notes], ""]
    if model.auto_steps:
        lines += ["## quant=auto", "", *[f"- {step}" for step in model.auto_steps], ""]
    lines += [
        "| tensor | type | shape | bytes | max abs error | RMSE | cosine |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        shape = "x".join(str(extent) for extent in row["shape"])
        lines.append(
            f"| {row['name']} | {row['qtype']} | {shape} | {row['bytes']:,} | "
            f"{row['max_abs_error']:.3g} | {row['rmse']:.3g} | {row['cosine']:.6f} |"
        )
    write_text_atomic(markdown_path, "\n".join(lines) + "\n")
