"""A firmware image's memory plan for a generated model: what the build writes its linker script from, and what
quant=auto and the advice on a model that does not fit plan again (llmcu.builder.steps, llmcu.builder.advice)."""

from __future__ import annotations

from . import memplan
from .codegen import GeneratedModel
from .settings import BuildSettings, FirmwareImage


def planner_blobs(model: GeneratedModel) -> list[memplan.InputSection]:
    """The generated arrays as the planner sees them: read in full every token (heat 0) or only in part."""
    cold = {"llmcu_w_tok_embeddings", "llmcu_s_tok_embeddings"} if not model.config.shared_classifier else set()
    return [
        memplan.InputSection(blob.section, blob.size, 1 if blob.symbol in cold or "tokenizer" in blob.section else 0)
        for blob in model.blobs
    ]


def plan_image(
    settings: BuildSettings, image: FirmwareImage, model: GeneratedModel, kv_type: str
) -> memplan.MemoryPlan:
    assert settings.firmware is not None
    return memplan.plan_memory(
        image.target,
        image.regions,
        model.config,
        planner_blobs(model),
        seq_len=model.seq_len,
        kv_type=kv_type,
        group_size=settings.plan.group_size,
        weights=settings.firmware.weights,
        kv=settings.firmware.kv,
        stack_bytes=settings.firmware.stack_bytes,
        records=model.records,
    )
