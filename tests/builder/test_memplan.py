"""The memory planner: placements by speed, user pins, and errors that say what would fit."""

from __future__ import annotations

import dataclasses

import pytest

from llmcu.builder.memplan import FitError, InputSection, kv_cache_bytes, plan_memory, run_state_bytes
from llmcu.core.config import ModelConfig
from llmcu.core.paths import TARGETS_DIR
from llmcu.platform.targets import MemoryRegion, load_target

STORIES260K = ModelConfig(64, 172, 5, 8, 4, 512, 512, True)
STORIES15M = ModelConfig(288, 768, 6, 6, 6, 32000, 256, True)

H743 = (
    MemoryRegion("itcm", 0x00000000, 64 << 10, "ram", 1, False, False),
    MemoryRegion("flash", 0x08000000, 2 << 20, "flash", 2, True, False),
    MemoryRegion("dtcm", 0x20000000, 128 << 10, "ram", 1, False, False),
    MemoryRegion("axi_sram", 0x24000000, 512 << 10, "ram", 2, False, False),
    MemoryRegion("sram123", 0x30000000, 288 << 10, "ram", 3, False, False),
    MemoryRegion("sram4", 0x38000000, 64 << 10, "ram", 3, False, False),
    MemoryRegion("qspi", 0x90000000, 16 << 20, "xip", 5, True, True),
    MemoryRegion("sdram", 0xC0000000, 8 << 20, "ram", 4, False, True),
)
ON_CHIP = tuple(region for region in H743 if not region.external)
TARGET = dataclasses.replace(load_target("stm32h743", TARGETS_DIR), memory=H743)


def weights(total: int, parts: int = 10) -> list[InputSection]:
    return [InputSection(f".llmcu_weights.w{i}", total // parts, 0) for i in range(parts)]


def test_kv_cache_sizes_of_stories260k() -> None:
    assert kv_cache_bytes(STORIES260K, 512, "f32") == 655_360
    assert kv_cache_bytes(STORIES260K, 512, "f16") == 327_680
    assert kv_cache_bytes(STORIES260K, 512, "q8") == 2 * 5 * 512 * (32 + 4 * 4)


def test_small_model_goes_fastest_first() -> None:
    plan = plan_memory(TARGET, ON_CHIP, STORIES260K, weights(300_000), seq_len=512, kv_type="f16")
    assert plan.boot_region == "flash" and plan.data_region == "dtcm"
    assert plan.state_region == "dtcm"  # a few KB: fits beside the stack
    assert plan.kv_region == "axi_sram"  # 327,680 bytes: too big for DTCM
    assert [group.region for group in plan.groups] == ["flash"]
    assert plan.planned["axi_sram"] == 327_680


@pytest.mark.fault(
    area="memory",
    kind="input",
    what="stories260K with an f32 KV cache at 512 tokens on the on-chip-only board",
    sees=r"655,360 bytes.*does not fit.*kv_type=f16 \(327,680 bytes, fits axi_sram\)",
)
def test_full_context_f32_kv_does_not_fit_on_chip_and_says_what_would(sees) -> None:
    with pytest.raises(FitError) as info:
        plan_memory(TARGET, ON_CHIP, STORIES260K, weights(300_000), seq_len=512, kv_type="f32")
    message = str(info.value)
    assert "655,360 bytes" in message and "axi_sram has 524,288 free" in message
    assert "kv_type=f16 (327,680 bytes, fits axi_sram)" in message
    assert "kv_type=q8" in message and "seq_len=409" in message and "a board with SDRAM and kv=sdram" in message
    sees(message)


def test_kv_pinned_to_sdram() -> None:
    plan = plan_memory(TARGET, H743, STORIES260K, weights(300_000), seq_len=512, kv="sdram")
    assert plan.kv_region == "sdram"


@pytest.mark.fault(
    area="memory",
    kind="input",
    what="kv=sdram and weights=qspi on a board without SDRAM or QSPI",
    sees=r"(no such region; it has: itcm, flash, dtcm|no QSPI flash)",
)
def test_pin_to_a_missing_region_is_an_error(sees) -> None:
    with pytest.raises(FitError, match="no such region; it has: itcm, flash, dtcm") as info:
        plan_memory(TARGET, ON_CHIP, STORIES260K, weights(300_000), seq_len=256, kv="sdram")
    sees(str(info.value))
    with pytest.raises(FitError, match="no QSPI flash") as info:
        plan_memory(TARGET, ON_CHIP, STORIES260K, weights(300_000), seq_len=256, weights="qspi")
    sees(str(info.value))


def test_15m_q8_spills_from_flash_into_qspi() -> None:
    blobs = [InputSection(f".llmcu_weights.l{i}", 1_100_000, 0) for i in range(6)]
    blobs.append(InputSection(".llmcu_weights.llmcu_w_tok_embeddings", 9_216_000, 0))
    plan = plan_memory(TARGET, H743, STORIES15M, blobs, seq_len=256, kv_type="f16")
    regions = {group.region: group for group in plan.groups}
    assert set(regions) == {"flash", "qspi"}
    assert regions["flash"].size + regions["qspi"].size == sum(blob.size for blob in blobs)
    assert plan.planned["flash"] <= 2 << 20


def test_weights_in_sdram_are_loaded_from_qspi() -> None:
    plan = plan_memory(TARGET, H743, STORIES260K, weights(1_000_000), seq_len=256, weights="sdram")
    (group,) = plan.groups
    assert (group.region, group.load_region) == ("sdram", "qspi")


@pytest.mark.fault(
    area="memory",
    kind="input",
    what="a 17 MB stories15M build for the on-chip-only board",
    sees=r"do not fit.*flash has.*a smaller quant=",
)
def test_model_too_big_for_the_nucleo(sees) -> None:
    with pytest.raises(FitError) as info:
        plan_memory(TARGET, ON_CHIP, STORIES15M, weights(17_000_000), seq_len=32, kv_type="q8")
    message = str(info.value)
    assert "do not fit" in message and "flash has" in message and "a smaller quant=" in message
    assert info.value.problem in message and info.value.hint.startswith("Options:")  # the build replaces the hint
    sees(message)


def test_run_state_size_is_plausible() -> None:
    # activations: x, xb, xb2, q (4 x 64) + hb, hb2 (2 x 172) + att (512) + logits (512) floats;
    # sampler: two 512-entry uint16 buffers; records: prompt tokens, next tokens, costs (4 + 4 + 8 bytes) x 512;
    # the encoder's working buffer: a token per byte of a 1024-byte console line, plus 3
    least = 4 * (4 * 64 + 2 * 172 + 512 + 512) + 2 * 512 * 2 + 16 * 512 + 4 * (1024 + 3)
    assert least <= run_state_bytes(STORIES260K, 512, 32) < least + 1024


def test_everything_that_does_not_fit_is_reported_at_once() -> None:
    """A 17 MB model with a full-context float32 cache on the on-chip board: the KV cache and the weights in one
    error (each with where there is room), not one per attempt."""
    with pytest.raises(FitError) as info:
        plan_memory(TARGET, ON_CHIP, STORIES15M, weights(17_000_000), seq_len=256, kv_type="f32")
    problem = info.value.problem
    assert "the KV cache" in problem and "does not fit" in problem
    assert ". Also, the weights (17,000,000 bytes in all) do not fit" in problem and "find no room" in problem


def test_the_twin_takes_the_boards_external_memories_as_far_as_its_window_allows() -> None:
    """mps2-an500's 16 MB stand in for a board's SDRAM and QSPI: each as large as the board's, in the twin's order,
    the QSPI in what is left; a board with QSPI alone gets all 16 MB of it on the twin."""
    from llmcu.builder.memplan import twin_regions
    from llmcu.platform.targets import load_target

    twin = load_target("qemu-m7", TARGETS_DIR)
    assert twin.external_window == (0x60000000, 16 << 20)

    def external(board_regions: tuple[MemoryRegion, ...]) -> list[tuple[str, int, int]]:
        return [(r.name, r.origin, r.size) for r in twin_regions(twin, board_regions) if r.external]

    assert external(H743) == [("sdram", 0x60000000, 8 << 20), ("qspi", 0x60800000, 8 << 20)]
    qspi_only = tuple(region for region in H743 if region.name != "sdram")
    assert external(qspi_only) == [("qspi", 0x60000000, 16 << 20)]
    assert external(ON_CHIP) == []
    internal = [r for r in twin_regions(twin, H743) if not r.external]
    assert internal == [r for r in twin.memory if not r.external]  # the internal map is the twin's own
