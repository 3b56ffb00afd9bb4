"""The memory planner: decide where every weight tensor, the tokenizer, the KV cache, the run state and the
stack go on a firmware target, before anything is compiled.

Regions are filled fastest first (``speed`` in target.toml): hot, small data (stack, run state) in DTCM, the
KV cache in the fastest RAM that holds it, weights in internal flash and then in memory-mapped QSPI flash,
or, with ``weights=sdram``, copied at boot into SDRAM. The user can pin the weights and the KV cache to a
region. A plan that cannot fit is an error naming the region, the bytes needed and the bytes there are, and
the options that would make it fit. The linker then checks the plan against the real sizes and the report
after linking (:mod:`llmcu.builder.elfreport`) says what each region holds.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from ..core.config import ModelConfig
from ..core.errors import LlmcuError
from ..model.kvcache import KV_TYPES, kv_cache_bytes, q16_positions
from ..platform.targets import PROMPT_MAX_BYTES, MemoryRegion, Target

WEIGHT_PLACEMENTS = ("auto", "flash", "qspi", "sdram")
REGION_ALIASES = {"axi": "axi_sram", "sram": "sram123"}
CODE_RESERVE = 96 * 1024  # flash kept for code, constants and the copy tables (the linker checks the real size)
DATA_RESERVE = 8 * 1024  # RAM kept beside the stack for the runtime's and libc's .data/.bss
# Hot code copied at boot into ITCM (zero-wait-state instruction memory on the M7): the compute kernels, the
# forward pass and expf. Their size is checked by the linker against the region; this is what the plan keeps.
HOT_CODE_RESERVE = 16 * 1024
HOT_CODE_REGION = "itcm"
# Input sections that are hot code, as linker-script patterns (object files of the runtime and libm's expf).
HOT_CODE_PATTERNS = ("*/kernels/*.o", "*/runtime_c/transformer.o", "*libm.a:lib_a-sf_exp.o")


def is_hot_object(path: str) -> bool:
    """Whether an object file of the build is hot code (what HOT_CODE_PATTERNS put in ITCM): the rest is
    compiled with the target's cold_cflags."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in HOT_CODE_PATTERNS if ":" not in pattern)


# Below the stack: an MPU region with no access (targets/cortex-m/stack_guard.c), so that an overflow faults
# instead of overwriting data. A power of two >= 32 (the MPU's smallest region), aligned to its size, and larger
# than any function's stack frame: a frame that skipped over the guard would land below it unseen (the optimised
# q8 matmul's is 1,276 bytes; tests/device/test_firmware_faults.py checks every frame of the firmware against this).
STACK_GUARD_BYTES = 2048


class FitError(LlmcuError):
    """The model does not fit the target's memory: ``problem`` says what and where, ``hint`` what might help (the
    build replaces it with changes it has planned again and seen fit: llmcu.builder.advice)."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(f"{problem}. {hint}" if hint else problem)
        self.problem = problem
        self.hint = hint


def run_state_bytes(
    config: ModelConfig,
    seq_len: int,
    group_size: int,
    kv_type: str = "f32",
    records: int = 0,
    prompt_bytes: int = PROMPT_MAX_BYTES["baremetal"],
) -> int:
    """Everything the runtime keeps in .bss.llmcu_state: the activations (transformer.c's run_state), the
    sampler's top-p buffers (sampler.c), the prompt's tokens and the per-pass records (generate.c: ``records``
    passes, 0 meaning ``seq_len``; overflow=slide keeps max_steps of them), the encoder's working buffer
    (tokenizer.c: a token per byte of the longest prompt, ``prompt_bytes``), with alignment slack."""
    act_len = max(config.dim, config.hidden_dim)
    floats = 4 * config.dim + 2 * config.hidden_dim + config.vocab_size
    groups = -(-act_len // group_size)
    activations = 4 * floats + act_len + 4 * groups
    sampler = 2 * config.vocab_size * (2 if config.vocab_size <= 65536 else 4)
    records = seq_len * 4 + (records or seq_len) * (4 + 8)  # prompt tokens; each pass's next token and cost
    records += 4 * (prompt_bytes + 3)  # the encoder's tokens before merging (BOS, dummy prefix, EOS)
    kv_scratch = 0 if kv_type == "f32" else 2 * config.kv_dim * 4  # a key and a value read back as float
    if kv_type == "q16":  # one head's int32 scores, int16 weights and int16 query
        kv_scratch += 6 * q16_positions(seq_len) + 2 * config.head_size
    else:  # one head's float attention weights
        kv_scratch += 4 * seq_len
    return -(-(activations + sampler + records + kv_scratch) // 32) * 32 + 4 * 32


class TwinFitError(FitError):
    """What fits the board does not fit its QEMU twin (whose memory is smaller): the twin is named, no board
    advised."""


@dataclass(frozen=True)
class InputSection:
    """A linked-in array to place: its input section and size."""

    section: str
    size: int
    heat: int  # 0: read in full every token; 1: read in part (embedding rows, tokenizer)


@dataclass
class SectionGroup:
    """Input sections that go to one region (``load_region``: where the bytes live before a boot-time copy)."""

    name: str
    region: str
    load_region: str | None
    sections: list[str] = field(default_factory=list)
    size: int = 0


@dataclass
class MemoryPlan:
    regions: list[MemoryRegion]
    boot_region: str  # vector table, code, constants
    data_region: str  # stack, .data, .bss
    stack_bytes: int
    kv_region: str
    kv_bytes: int
    state_region: str
    state_bytes: int
    groups: list[SectionGroup]
    planned: dict[str, int]  # region -> bytes the plan puts there (code estimated)
    kv_type: str = "f32"
    hot_code_region: str | None = None  # ITCM: the kernels' code, copied there from flash at boot

    def region(self, name: str) -> MemoryRegion:
        return next(region for region in self.regions if region.name == name)


class _Budget:
    """Free bytes per region while planning."""

    def __init__(self, regions: Sequence[MemoryRegion]) -> None:
        self.free = {region.name: region.size for region in regions}
        self.used = dict.fromkeys(self.free, 0)

    def take(self, region: str, size: int) -> bool:
        if self.free[region] < size:
            return False
        self.free[region] -= size
        self.used[region] += size
        return True


def available_regions(target: Target, board_memories: Iterable[str] | None) -> list[MemoryRegion]:
    """The target's regions, without external memories the board does not have."""
    present = None if board_memories is None else set(board_memories)
    return [r for r in target.memory if not r.external or present is None or r.name in present]


def _share_window(room: int, wanted: dict[str, int]) -> dict[str, int]:
    """Split a twin's external window between the board's external memories: the smallest first, each as large as
    the board's or an equal share of what is left, so that one large memory (a Daisy Seed's 64 MB of SDRAM) does not
    crowd out the others (its QSPI, which holds the weights)."""
    shares = {}
    for count, name in enumerate(sorted(wanted, key=lambda n: wanted[n]), start=0):
        share = min(wanted[name], room // (len(wanted) - count))
        shares[name] = share
        room -= share
    return shares


def twin_regions(twin: Target, board_regions: Sequence[MemoryRegion]) -> list[MemoryRegion]:
    """A twin's regions for a board: its own internal ones, and the board's external memories laid out in the
    twin's ``external_window`` in the twin's order, each as large as the board's or as its share of the window
    (_share_window). A twin without a window keeps its own map (less the memories the board does not have)."""
    board = {region.name: region for region in board_regions if region.external}
    # The twin's internal memories are as large as the board's where the board has less (the STM32H750's 128 KB
    # of flash): what the board cannot hold must not fit the twin either.
    internal = {region.name: region.size for region in board_regions if not region.external}
    own = [replace(r, size=min(r.size, internal.get(r.name, r.size))) if not r.external else r for r in twin.memory]
    origin, room = twin.external_window
    if not room:
        return [r for r in own if not r.external or r.name in board]
    shares = _share_window(room, {r.name: board[r.name].size for r in own if r.external and r.name in board})
    out = []
    for region in own:
        if not region.external:
            out.append(region)
        elif shares.get(region.name):
            out.append(replace(region, origin=origin, size=shares[region.name]))
            origin += shares[region.name]
    return out


def _resolve(name: str, regions: Sequence[MemoryRegion], what: str) -> str:
    name = REGION_ALIASES.get(name, name)
    names = [region.name for region in regions]
    if name not in names:
        raise FitError(f"{what}={name}: this target/board has no such region; it has: {', '.join(names)}")
    return name


def _ram_by_speed(regions: Sequence[MemoryRegion]) -> list[MemoryRegion]:
    # ITCM is for code; everything else of kind ram, fastest first.
    return sorted((r for r in regions if r.kind == "ram" and r.name != "itcm"), key=lambda r: (r.speed, -r.size))


def _kv_suggestions(
    config: ModelConfig, seq_len: int, kv_type: str, room: dict[str, int], regions: Sequence[MemoryRegion]
) -> list[str]:
    suggestions = []
    for other in KV_TYPES:
        size = kv_cache_bytes(config, seq_len, other)
        fits = [name for name, free in room.items() if size <= free]
        if other != kv_type and fits:
            suggestions.append(f"kv_type={other} ({size:,} bytes, fits {fits[0]})")
    largest = max(room.values(), default=0)
    per_position = kv_cache_bytes(config, 1, kv_type)
    if per_position and largest >= per_position:
        suggestions.append(f"seq_len={largest // per_position} (the longest context whose {kv_type} cache fits)")
    if not any(r.name == "sdram" for r in regions):
        suggestions.append("a board with SDRAM and kv=sdram (docs/boards.md: which boards have it)")
    return suggestions


def plan_memory(
    target: Target,
    regions: Sequence[MemoryRegion],
    config: ModelConfig,
    blobs: Sequence[InputSection],
    *,
    seq_len: int,
    kv_type: str = "f32",
    group_size: int = 32,
    weights: str = "auto",
    kv: str = "auto",
    stack_bytes: int = 8 * 1024,
    records: int = 0,
) -> MemoryPlan:
    """Place everything or raise a :class:`FitError` that says what does not fit and what would. ``records``: the
    forward passes one run records (0: ``seq_len``; overflow=slide: max_steps)."""
    regions = list(regions)
    budget = _Budget(regions)
    boot = next(r for r in sorted(regions, key=lambda r: r.speed) if r.kind == "flash")
    ram = _ram_by_speed(regions)
    if not ram:
        raise FitError(f"target {target.name} declares no RAM region")
    data = ram[0]
    if not budget.take(boot.name, CODE_RESERVE):
        raise FitError(f"{boot.name} ({boot.size:,} bytes) cannot hold the runtime's code ({CODE_RESERVE:,} bytes)")
    if not budget.take(data.name, stack_bytes + STACK_GUARD_BYTES + DATA_RESERVE):
        raise FitError(f"{data.name} ({data.size:,} bytes) cannot hold a {stack_bytes:,}-byte stack and .data/.bss")

    # Everything that does not fit is reported at once (what, where, how much room there is), not one per attempt.
    problems: list[tuple[str, str]] = []  # (problem, hint)
    state = run_state_bytes(config, seq_len, group_size, kv_type, records)
    state_region = next((r.name for r in ram if budget.take(r.name, state)), None)
    if state_region is None:
        problems.append((f"the run state ({state:,} bytes) fits no RAM region: " + _room(budget, ram), ""))

    kv_bytes = kv_cache_bytes(config, seq_len, kv_type)
    candidates = [r.name for r in ram] if kv == "auto" else [_resolve(kv, regions, "kv")]
    kv_region = next((name for name in candidates if budget.take(name, kv_bytes)), None)
    if kv_region is None:
        room = {name: budget.free[name] for name in candidates}
        where = ", ".join(
            f"{name} has {free:,} free of {budget.free[name] + budget.used[name]:,}" for name, free in room.items()
        )
        suggestions = _kv_suggestions(config, seq_len, kv_type, room, regions)
        problems.append(
            (
                f"the KV cache ({kv_bytes:,} bytes: kv_type={kv_type}, seq_len={seq_len}) does not fit: {where}",
                f"Options that would make it fit: {'; '.join(suggestions)}",
            )
        )

    try:
        groups = _place_blobs(blobs, regions, budget, boot, weights)
    except FitError as error:
        problems.append((error.problem, error.hint))
        groups = []
    if problems:
        hints = "; ".join(hint for _, hint in problems if hint)
        raise FitError(". Also, ".join(problem for problem, _ in problems), hints)
    assert state_region is not None and kv_region is not None
    hot_code = (
        HOT_CODE_REGION if HOT_CODE_REGION in budget.free and budget.take(HOT_CODE_REGION, HOT_CODE_RESERVE) else None
    )
    planned = {name: budget.used[name] for name in budget.used}
    return MemoryPlan(
        regions=regions,
        boot_region=boot.name,
        data_region=data.name,
        stack_bytes=stack_bytes,
        kv_region=kv_region,
        kv_bytes=kv_bytes,
        state_region=state_region,
        state_bytes=state,
        groups=groups,
        planned=planned,
        kv_type=kv_type,
        hot_code_region=hot_code,
    )


def choose_kv_type(candidates: Sequence[str], attempt: Callable[[str], MemoryPlan]) -> MemoryPlan:
    """The plan of the first of ``candidates`` (llmcu.model.kvcache.kv_type_candidates) that fits; the first's
    FitError when none does."""
    failure: FitError | None = None
    for candidate in candidates:
        try:
            return attempt(candidate)
        except FitError as error:
            failure = failure or error
    assert failure is not None
    raise failure


def _room(budget: _Budget, regions: Iterable[MemoryRegion]) -> str:
    return ", ".join(f"{r.name} has {budget.free[r.name]:,} bytes free" for r in regions)


def _weight_regions(regions: Sequence[MemoryRegion], boot: MemoryRegion, weights: str) -> list[tuple[str, str | None]]:
    """Where weights may go, in order of preference: (region, load region or None)."""
    names = {r.name for r in regions}
    xip = [r.name for r in sorted(regions, key=lambda r: r.speed) if r.kind == "xip"]
    if weights == "auto":
        return [(boot.name, None)] + [(name, None) for name in xip]
    if weights == "flash":
        return [(boot.name, None)]
    if weights == "qspi":
        if "qspi" not in names:
            raise FitError("weights=qspi: this board has no QSPI flash (docs/boards.md: which boards have it)")
        return [("qspi", None)]
    if weights == "sdram":
        if "sdram" not in names:
            raise FitError("weights=sdram: this board has no SDRAM (docs/boards.md: which boards have it)")
        return [("sdram", xip[0] if xip else boot.name)]
    raise FitError(f"weights={weights}: allowed: {', '.join(WEIGHT_PLACEMENTS)}")


def _place_blobs(
    blobs: Sequence[InputSection], regions: Sequence[MemoryRegion], budget: _Budget, boot: MemoryRegion, weights: str
) -> list[SectionGroup]:
    choices = _weight_regions(regions, boot, weights)
    groups: dict[tuple[str, str | None], SectionGroup] = {}
    unplaced: list[InputSection] = []
    # Hot tensors first, so they take the fastest region; cold ones (embedding rows, tokenizer) spill.
    for blob in sorted(blobs, key=lambda b: b.heat):
        size = blob.size + 16  # alignment
        placed = None
        for region, load in choices:
            if budget.free[region] >= size and (load is None or budget.free[load] >= size):
                budget.take(region, size)
                if load is not None:
                    budget.take(load, size)
                placed = (region, load)
                break
        if placed is None:
            unplaced.append(blob)
            continue
        group = groups.setdefault(
            placed, SectionGroup(f"{placed[0]}_from_{placed[1]}" if placed[1] else placed[0], *placed)
        )
        group.sections.append(blob.section)
        group.size += blob.size
    if unplaced:  # every array that found no room, at once
        total, missing = sum(b.size for b in blobs), sum(b.size for b in unplaced)
        where = ", ".join(f"{region} has {budget.free[region]:,} bytes free" for region, _ in choices)
        largest = max(unplaced, key=lambda b: b.size)
        raise FitError(
            f"the weights ({total:,} bytes in all) do not fit with weights={weights}: {len(unplaced)} arrays, "
            f"{missing:,} bytes, find no room (the largest, {largest.section}, needs {largest.size:,} bytes) and "
            f"{where}",
            "Options: a smaller quant=, weights=auto (spill from flash into QSPI), or a board with QSPI flash",
        )
    order = {blob.section: index for index, blob in enumerate(blobs)}
    for group in groups.values():
        group.sections.sort(key=order.__getitem__)  # keep the file order within a region
    return list(groups.values())


def describe(plan: MemoryPlan) -> list[str]:
    """Human lines: what goes where."""
    lines = [
        f"code, constants -> {plan.boot_region}; stack {plan.stack_bytes:,} B above a {STACK_GUARD_BYTES} B MPU guard, "
        f".data/.bss -> {plan.data_region}"
    ]
    lines.append(
        f"run state {plan.state_bytes:,} B -> {plan.state_region}; "
        f"KV cache ({plan.kv_type}) {plan.kv_bytes:,} B -> {plan.kv_region}"
    )
    if plan.hot_code_region:
        lines.append(
            f"hot code (kernels, forward pass, expf) -> {plan.hot_code_region}, copied at boot from {plan.boot_region}"
        )
    for group in plan.groups:
        copied = f" (copied at boot from {group.load_region})" if group.load_region else ""
        lines.append(f"{len(group.sections)} weight/tokenizer arrays, {group.size:,} B -> {group.region}{copied}")
    return lines
