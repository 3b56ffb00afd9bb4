"""Which model fits which board, before anything is downloaded: the model presets' shapes x quants x a firmware
target's boards, planned by the build's own memory planner (llmcu.builder.memplan) with the arrays the build would
link, kv_type=auto as the build decides it, and the board's own memory map. For each: whether the whole context
fits (else the longest that does), where the weights and the KV cache live, and an estimated tok/s from the board's
read bandwidths (llmcu.platform.stm32h7.Board.read_bandwidth: flash wait states, QSPI width and clock, SDRAM bus
width) and the Cortex-M7's cycles per multiply-accumulate. README's "Boards" table is this module's output
(tools/board_fit.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import LAYER_MATRICES, ModelConfig
from ..core.errors import LlmcuError
from ..model.kvcache import kv_type_candidates
from ..model.presets import Preset
from ..model.quantize import QuantPlan, matrix_bytes
from ..platform.stm32h7 import Board, board_regions
from ..platform.targets import Target
from ..platform.watchdog import CYCLES_PER_MAC
from . import memplan
from .elfreport import macs_per_token

GROUP_SIZE = 32
# What one token reads besides the weights is small; the weights' bytes are read once per token from where they
# live (the embedding row and the tokenizer only in part: they do not count).
COLD_SECTIONS = (".llmcu_weights.llmcu_w_tok_embeddings", ".llmcu_weights.llmcu_s_tok_embeddings", ".llmcu_tokenizer")


def tokenizer_sections(preset: Preset) -> list[memplan.InputSection]:
    """The tokenizer's four arrays as codegen links them: scores, offsets, sorted order, and the pieces' bytes (a
    tokenizer.bin's size less its per-piece score and length, when the preset records it)."""
    vocab = preset.shape.vocab_size
    size = preset.tokenizer.size if preset.tokenizer is not None and preset.tokenizer.size else 0
    piece_bytes = max(size - 4 - 8 * vocab, 0) or 8 * vocab
    sizes = {"scores": 4 * vocab, "offsets": 4 * (vocab + 1), "sorted": 4 * vocab, "bytes": piece_bytes}
    return [memplan.InputSection(f".llmcu_tokenizer.llmcu_tok_{name}", n, 1) for name, n in sizes.items()]


def weight_sections(config: ModelConfig, plan: QuantPlan, seq_len: int) -> list[memplan.InputSection]:
    """The weight arrays codegen.weight_blobs links for this shape and plan (codes and group scales of each matrix,
    per layer; the norms; the RoPE table firmware builds link), with the planner's heat."""
    shapes = config.tensor_shapes()

    def matrix(name: str, kind: str, rows: int, cols: int, heat: int) -> list[memplan.InputSection]:
        qtype = plan.qtype(kind)
        total = matrix_bytes(qtype, rows, cols, plan.group_size)
        codes = rows * cols * 4 if qtype == "fp32" else total - rows * (2 if qtype == "q4z" else 4) * (
            -(-cols // plan.group_size))  # fmt: skip
        out = [memplan.InputSection(f".llmcu_weights.llmcu_w_{name}", codes, heat)]
        if total > codes:
            out.append(memplan.InputSection(f".llmcu_weights.llmcu_s_{name}", total - codes, heat))
        return out

    cold = 0 if config.shared_classifier else 1  # a separate classifier: the embedding is read one row a token
    sections = matrix("tok_embeddings", "tok_embeddings", config.vocab_size, config.dim, cold)
    for layer in range(config.n_layers):
        for norm in ("rms_att", "rms_ffn"):
            sections.append(memplan.InputSection(f".llmcu_weights.llmcu_w_{norm}_l{layer}", 4 * config.dim, 0))
        for kind in LAYER_MATRICES:
            rows, cols = shapes[kind][-2:]
            sections += matrix(f"{kind}_l{layer}", kind, rows, cols, 0)
    sections.append(memplan.InputSection(".llmcu_weights.llmcu_w_rms_final", 4 * config.dim, 0))
    if not config.shared_classifier:
        sections += matrix("wcls", "wcls", config.vocab_size, config.dim, 0)
    sections.append(memplan.InputSection(".llmcu_weights.llmcu_rope_table", 4 * seq_len * config.head_size, 0))
    return sections


@dataclass
class BoardFit:
    """One model x quant x board cell."""

    board: str
    preset: str
    quant: str
    seq_len: int  # the model's context
    fits: bool  # the whole context, weights=auto
    longest: int = 0  # the longest context that fits when the whole one does not (0: not even one position)
    kv_type: str = ""
    kv_region: str = ""
    weights: dict[str, int] = field(default_factory=dict)  # region -> bytes of weights and tokenizer
    tok_per_s: float = 0.0
    sdram_tok_per_s: float = 0.0  # weights=sdram (copied from QSPI/flash at boot), when that fits
    problem: str = ""  # why nothing fits

    def cell(self) -> str:
        """The summary table's cell: estimated tok/s (and with weights=sdram when faster), the context when the
        whole one does not fit, or a dash."""
        if not self.fits and not self.longest:
            return "-"
        text = f"{self.tok_per_s:.3g}"
        if self.sdram_tok_per_s > self.tok_per_s:
            text += f" / {self.sdram_tok_per_s:.3g}"
        return text if self.fits else f"{text} (seq_len<={self.longest})"

    def detail(self) -> list[str]:
        """The details table's row: board, model, quant, context, where the weights and the KV cache live, tok/s."""
        if not self.fits and not self.longest:
            return [f"`{self.board}`", f"`{self.preset}`", self.quant, f"no: {self.problem}", "", "", "", ""]
        where = " + ".join(f"{region} {_mb(size)}" for region, size in self.weights.items())
        context = f"{self.seq_len} (all)" if self.fits else f"{self.longest} of {self.seq_len}"
        sdram = f"{self.sdram_tok_per_s:.3g}" if self.sdram_tok_per_s else ""
        return [f"`{self.board}`", f"`{self.preset}`", self.quant, context, where,
                f"{self.kv_type} in {self.kv_region}", f"{self.tok_per_s:.3g}", sdram]  # fmt: skip


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB" if size >= 1 << 20 else f"{size >> 10} KB"


def _plan(target: Target, board: Board, config: ModelConfig, plan: QuantPlan, preset: Preset, seq_len: int,
          weights: str) -> memplan.MemoryPlan:  # fmt: skip
    regions = board_regions(target.memory, board)
    blobs = weight_sections(config, plan, seq_len) + tokenizer_sections(preset)
    return memplan.choose_kv_type(
        kv_type_candidates("auto", plan.quantized),
        lambda kv_type: memplan.plan_memory(
            target,
            regions,
            config,
            blobs,
            seq_len=seq_len,
            kv_type=kv_type,
            group_size=plan.group_size,
            weights=weights,
        ),
    )


def tokens_per_second(board: Board, memory_plan: memplan.MemoryPlan, config: ModelConfig, quantized: bool,
                      seq_len: int) -> float:  # fmt: skip
    """min(compute, memory): the multiply-accumulates at the middle of the context at the Cortex-M7's cycles per
    MAC, and the weights read once a token from each region at its bandwidth."""
    position = max(1, seq_len // 2)
    macs = macs_per_token(config, (position,)).get(f"total_at_pos_{position}", macs_per_token(config)["matmul"])
    compute = board.clocks.cpu_hz / (macs * CYCLES_PER_MAC["quantized" if quantized else "fp32"])
    bandwidth = board.read_bandwidth()
    seconds = 0.0
    for group in memory_plan.groups:
        hot = sum(1 for s in group.sections if not s.startswith(COLD_SECTIONS))
        if group.region in bandwidth and hot:
            streamed = group.size * hot / max(len(group.sections), 1)  # the cold arrays are not read in full
            seconds += streamed / bandwidth[group.region]
    return min(compute, 1 / seconds) if seconds else compute


def fit(target: Target, board: Board, preset: Preset, quant: str) -> BoardFit:
    config = preset.shape
    plan = QuantPlan.parse(quant, GROUP_SIZE)
    row = BoardFit(board.name, preset.name, quant, config.seq_len, fits=False)
    try:
        memory_plan = _plan(target, board, config, plan, preset, config.seq_len, "auto")
        row.fits = True
    except memplan.FitError as error:
        row.problem = error.problem
        lo, hi = 0, config.seq_len - 1
        while lo < hi:  # the longest context that fits (bisection; the weights must fit at all)
            mid = (lo + hi + 1) // 2
            try:
                _plan(target, board, config, plan, preset, mid, "auto")
                lo = mid
            except memplan.FitError:
                hi = mid - 1
        if lo == 0:
            row.problem = _short(row.problem)
            return row
        row.longest = lo
        memory_plan = _plan(target, board, config, plan, preset, lo, "auto")
    context = config.seq_len if row.fits else row.longest
    row.kv_type, row.kv_region = memory_plan.kv_type, memory_plan.kv_region
    for group in memory_plan.groups:
        row.weights[group.region] = row.weights.get(group.region, 0) + group.size
    row.tok_per_s = tokens_per_second(board, memory_plan, config, plan.quantized, context)
    if board.sdram is not None:
        try:
            sdram_plan = _plan(target, board, config, plan, preset, context, "sdram")
            row.sdram_tok_per_s = tokens_per_second(board, sdram_plan, config, plan.quantized, context)
        except memplan.FitError:
            pass
    return row


def _short(problem: str) -> str:
    """What does not fit, for a table: the weights when they do not (nothing else helps then), else the first."""
    problems = problem.split(". Also, ")
    weights = next((p for p in problems if p.startswith("the weights")), None)
    if weights is not None:
        total = int(weights.split("(", 1)[1].split(" bytes")[0].replace(",", ""))
        return f"the weights ({_mb(total)}) do not fit"
    first = problems[0]
    if first.startswith("the KV cache"):
        size = int(first.split("(", 1)[1].split(" bytes")[0].replace(",", ""))
        return f"the KV cache ({_mb(size)} at one position) fits no RAM"
    return first.split(":")[0]


def fit_tables(
    target: Target, boards: list[Board], presets: list[Preset], quants: list[str]
) -> tuple[list[str], list[str]]:
    """The summary (one row per model and quant, one column per board: estimated tok/s) and the details (one row
    per cell: context, weights, KV cache)."""
    if not boards:
        raise LlmcuError(f"target {target.name} has no boards")
    fits = {(p.name, q, b.name): fit(target, b, p, q) for p in presets for q in quants for b in boards}
    summary = ["| model | quant | " + " | ".join(f"`{board.name}`" for board in boards) + " |",
               "|---|---|" + "---:|" * len(boards)]  # fmt: skip
    for preset in presets:
        for quant in quants:
            cells = [fits[preset.name, quant, board.name].cell() for board in boards]
            summary.append(f"| `{preset.name}` | {quant} | " + " | ".join(cells) + " |")
    details = ["| board | model | quant | context | weights in | KV cache | tok/s | weights=sdram tok/s |",
               "|---|---|---|---|---|---|---:|---:|"]  # fmt: skip
    for board in boards:
        for preset in presets:
            for quant in quants:
                details.append("| " + " | ".join(fits[preset.name, quant, board.name].detail()) + " |")
    return summary, details
