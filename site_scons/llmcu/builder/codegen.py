"""Generate the C side of a model: ``model_config.h``, ``model_weights.c``, ``model_data.S`` + its data file.

The weights never pass through the C compiler: they are written once to a binary file which the assembler
pulls in with ``.incbin``, one symbol and one section per tensor. Every output is written atomically, and the
data file before the sources that name it, so an interrupted generation never leaves a set of files that a
later build would trust.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.config import LAYER_MATRICES, ModelConfig
from ..core.errors import LlmcuError, OptionError
from ..core.fileio import write_bytes_atomic, write_text_atomic
from ..model import kvq16
from ..model.checkpoint import Checkpoint
from ..model.kvcache import KV_CODES, check_kv_type, kv_cache_bytes
from ..model.quantize import QTYPES, QuantizedMatrix, QuantPlan, TensorReport, error_report, quantize_checkpoint
from ..model.tokenizer import Tokenizer, sorted_order
from . import layouts, weightsfile
from .templating import environment
from .weightsfile import WeightsFileLayout
from .window import SlidingWindow, check_window

DATA_FILE = "model_data.bin"
GENERATED_FILES = ("model_config.h", "model_weights.c", "model_data.S", DATA_FILE)
BLOB_ALIGN = 16
QTYPE_CODES = {qtype: code for code, qtype in enumerate(QTYPES)}  # fp32 0, q8 1, q4 2, q4z 3, as llmcu.h


@dataclass
class LinkedArray:
    """One linked-in array: its symbol, section, C element type and bytes."""

    symbol: str
    section: str
    ctype: str
    data: bytes
    align: int = BLOB_ALIGN
    offset: int = 0

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class GeneratedModel:
    """A quantized model laid out for linking (:func:`prepare`), before and after its sources are written.

    ``kv_type`` may still be decided (by the memory planner) between :func:`prepare` and :func:`write_sources`.
    """

    config: ModelConfig
    seq_len: int
    plan: QuantPlan
    blobs: list[LinkedArray]
    reports: list[TensorReport]
    kv_type: str = "f32"
    data: bytes = b""
    max_token_length: int = 1
    weight_layout: str = layouts.REFERENCE  # how the kernel set reads the quantized matrices (llmcu.builder.layouts)
    quality: dict[str, object] | None = None  # llmcu.model.quality.build_quality's figures, when measured
    quality_note: str = ""  # why quality was not measured
    auto_steps: tuple[str, ...] = ()  # quant=auto: what it chose and why (llmcu.builder.autoquant)
    source_notes: tuple[str, ...] = ()  # what importing the model did (a GGUF file's dequantized tensors)
    # kv_type=q16's scales (llmcu.model.kvq16.Q16Scales.as_array), measured when the build may choose q16.
    kv_q16_scales: np.ndarray | None = None
    window: SlidingWindow | None = None  # overflow=slide: the sinks and the most passes a run records
    add_space_prefix: bool = True  # how the runtime encodes a prompt (the vocabulary's, llmcu.model.tokenizer)
    add_bos: bool = True

    @property
    def records(self) -> int:
        """How many forward passes one run records (and may make): the context, or max_steps with a window."""
        return self.window.max_steps if self.window is not None else self.seq_len

    @property
    def rope_table(self) -> bool:
        """Whether RoPE reads its angles from a build-time table (llmcu_rope_table) instead of computing them."""
        return any(blob.symbol == ROPE_TABLE_SYMBOL for blob in self.blobs)

    def weight_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs if blob.section.startswith(".llmcu_weights"))

    def tokenizer_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs if blob.section.startswith(".llmcu_tokenizer"))

    def kv_cache_bytes(self) -> int:
        return kv_cache_bytes(self.config, self.seq_len, self.kv_type)


def _weight_blob(symbol: str, ctype: str, data: bytes) -> LinkedArray:
    return LinkedArray(symbol, f".llmcu_weights.{symbol}", ctype, data)


def _matrix_blobs(
    kind: str, matrix: QuantizedMatrix, layer: int | None, layout: str = layouts.REFERENCE
) -> list[LinkedArray]:
    suffix = kind if layer is None else f"{kind}_l{layer}"
    data, scales = layouts.storage(matrix, layout)  # the kernel set's arrangement (llmcu.builder.layouts)
    ctype = {"fp32": "float", "q8": "int8_t", "q4": "uint8_t", "q4z": "uint8_t"}[matrix.qtype]
    blobs = [_weight_blob(f"llmcu_w_{suffix}", ctype, data)]
    if scales:  # q4z: one 16-bit word per group (scale and zero point)
        blobs.append(_weight_blob(f"llmcu_s_{suffix}", "uint16_t" if matrix.qtype == "q4z" else "float", scales))
    return blobs


def _layer_slice(matrix: QuantizedMatrix, layer: int) -> QuantizedMatrix:
    scales = None if matrix.scales is None else matrix.scales[layer]
    zeros = None if matrix.zeros is None else matrix.zeros[layer]
    return QuantizedMatrix(matrix.qtype, matrix.group_size, matrix.q[layer], scales, zeros)


def _f32(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def weight_blobs(
    ckpt: Checkpoint, quantized: dict[str, QuantizedMatrix], layout: str = layouts.REFERENCE
) -> list[LinkedArray]:
    """Every weight array in the order the runtime's descriptor names them, matrices in ``layout``."""
    config, weights = ckpt.config, ckpt.weights
    blobs = _matrix_blobs("tok_embeddings", quantized["tok_embeddings"], None, layout)
    for layer in range(config.n_layers):
        blobs.append(_weight_blob(f"llmcu_w_rms_att_l{layer}", "float", _f32(weights["rms_att"][layer])))
        blobs.append(_weight_blob(f"llmcu_w_rms_ffn_l{layer}", "float", _f32(weights["rms_ffn"][layer])))
        for kind in LAYER_MATRICES:
            blobs.extend(_matrix_blobs(kind, _layer_slice(quantized[kind], layer), layer, layout))
    blobs.append(_weight_blob("llmcu_w_rms_final", "float", _f32(weights["rms_final"])))
    if not config.shared_classifier:
        blobs.extend(_matrix_blobs("wcls", quantized["wcls"], None, layout))
    return blobs


ROPE_TABLE_SYMBOL = "llmcu_rope_table"


def c_float_literal(value: float) -> str:
    """The shortest C float literal that reads back as ``value`` rounded to float32 (``10000.0f``, ``1e-05f``)."""
    single = np.float32(value)
    positional = np.format_float_positional(single, unique=True, trim="0")
    text = positional if len(positional) <= 12 else np.format_float_scientific(single, unique=True, trim="0")
    return f"{text}f"


def rope_table(config: ModelConfig, seq_len: int, math: str = "auto") -> np.ndarray:
    """RoPE's cosines and sines for positions 0..seq_len-1, float32 ``[seq_len][head_size]``: row ``pos`` holds
    ``cosf(pos * freq)`` at ``[hd]`` and ``sinf(pos * freq)`` at ``[hd + 1]`` for each even head position
    ``hd``, ``freq = 1.0f / powf(theta, hd / (float)head_size)`` (theta: the model's rope_theta, run.c's
    10000) -- the runtime's own expressions, in
    float32, through the same C math functions the Python reference uses (the host's libm, as a host build
    calls them; tests/runtime/test_cortex_m7_kernels.py checks that the Cortex-M7 newlib gives the same bits)."""
    from ..model.reference import F32, c_math  # only here: the reference pulls in numpy-heavy code

    cmath = c_math(math)
    head_size = config.head_size
    if head_size % 2:
        raise LlmcuError(f"a RoPE table needs an even head_size (this model's is {head_size}); use rope_table=no")
    exponents = (np.arange(0, head_size, 2, dtype=F32) / F32(head_size)).astype(F32)
    freq = (F32(1.0) / cmath.powf(float(F32(config.rope_theta)), exponents)).astype(F32)
    angles = (np.arange(seq_len, dtype=F32)[:, None] * freq[None, :]).astype(F32)
    table = np.empty((seq_len, head_size), dtype=F32)
    table[:, 0::2] = cmath.cosf(angles)
    table[:, 1::2] = cmath.sinf(angles)
    return table


def rope_table_blob(config: ModelConfig, seq_len: int) -> LinkedArray:
    """The table as a flash array beside the weights (the planner places it like a weight tensor)."""
    return _weight_blob(ROPE_TABLE_SYMBOL, "float", _f32(rope_table(config, seq_len)))


def tokenizer_blobs(tok: Tokenizer) -> list[LinkedArray]:
    """The vocabulary as four arrays, with the encoder's sorted lookup order computed here, not on device."""
    offsets = np.zeros(len(tok.pieces) + 1, dtype="<u4")
    offsets[1:] = np.cumsum([len(piece) for piece in tok.pieces])
    order = np.asarray(sorted_order(tok), dtype="<u4")

    def blob(symbol: str, ctype: str, data: bytes) -> LinkedArray:
        return LinkedArray(symbol, f".llmcu_tokenizer.{symbol}", ctype, data)

    return [
        blob("llmcu_tok_scores", "float", _f32(tok.scores)),
        blob("llmcu_tok_offsets", "uint32_t", offsets.tobytes()),
        blob("llmcu_tok_sorted", "uint32_t", order.tobytes()),
        blob("llmcu_tok_bytes", "uint8_t", b"".join(tok.pieces)),
    ]


def layout(blobs: Iterable[LinkedArray]) -> bytes:
    """Assign each blob its offset in the data file and return the file's bytes."""
    chunks: list[bytes] = []
    offset = 0
    for blob in blobs:
        padding = -offset % blob.align
        chunks.append(b"\0" * padding)
        offset += padding
        blob.offset = offset
        chunks.append(blob.data)
        offset += blob.size
    return b"".join(chunks)


def _reference(blobs_by_symbol: dict[str, LinkedArray], weights_file: WeightsFileLayout | None) -> Callable[[str], str]:
    """How model_weights.c names an array: its symbol, or (weights file) its offset in the mapped file."""

    def ref(symbol: str) -> str:
        if weights_file is None:
            return symbol
        blob = blobs_by_symbol[symbol]
        return f"LLMCU_WF({blob.ctype}, {weights_file.offset(blob.offset)})"

    return ref


def _tensor_initializer(blobs_by_symbol: dict[str, LinkedArray], ref: Callable[[str], str]) -> Callable[..., str]:
    def tensor(kind: str, layer: int | None = None) -> str:
        suffix = kind if layer is None else f"{kind}_l{layer}"
        data = f"llmcu_w_{suffix}"
        scales = f"llmcu_s_{suffix}"
        return f"{{ {ref(data)}, {ref(scales) if scales in blobs_by_symbol else 'NULL'} }}"

    return tensor


def _c_float_table(array: np.ndarray | None) -> list[list[str]]:
    """A float32 ``(n, rows, cols)`` array as C initializer rows, each value an exact hex float literal."""
    assert array is not None
    values = np.asarray(array, dtype=np.float32)
    return [[", ".join(f"{float(x).hex()}f" for x in row) for row in block] for block in values]


def _progress(items: list[str], enabled: bool) -> Iterator[str]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc="quantize", unit="tensor", file=sys.stderr, leave=False)


def quantization_reports(
    ckpt: Checkpoint, quantized: dict[str, QuantizedMatrix], progress: bool = False
) -> list[TensorReport]:
    """Per-matrix error figures (per layer for layer tensors)."""
    reports: list[TensorReport] = []
    for kind in _progress(list(quantized), progress):
        matrix = quantized[kind]
        if matrix.q.ndim == 3:
            for layer in range(matrix.q.shape[0]):
                name = f"layers.{layer}.{kind}"
                reports.append(error_report(name, ckpt.weights[kind][layer], _layer_slice(matrix, layer)))
        else:
            reports.append(error_report(kind, ckpt.weights[kind], matrix))
    return reports


def prepare(
    ckpt: Checkpoint,
    tok: Tokenizer,
    plan: QuantPlan,
    *,
    seq_len: int | None = None,
    kv_type: str = "f32",
    progress: bool = False,
    rope_table: bool = False,
    weight_layout: str = layouts.REFERENCE,
    quantized: dict[str, QuantizedMatrix] | None = None,
    reports: bool = True,
    window: SlidingWindow | None = None,
) -> GeneratedModel:
    """Check the inputs, quantize ``ckpt`` per ``plan`` and lay out the data file; nothing is written.
    ``rope_table``: add RoPE's cosines and sines for every position (:func:`rope_table`). ``weight_layout``: how
    the quantized matrices are arranged, for the kernel set being built (llmcu.builder.layouts). ``quantized``: the
    matrices when they are already quantized per ``plan`` (quant=auto assembles them)."""
    config = ckpt.config
    check_kv_type(kv_type)
    if len(tok.pieces) != config.vocab_size:
        raise LlmcuError(
            f"tokenizer has {len(tok.pieces)} tokens but the model's vocab_size is {config.vocab_size}; "
            "use the tokenizer that belongs to this model"
        )
    context = config.seq_len if seq_len in (None, 0) else int(seq_len)
    if not 1 <= context <= config.seq_len:
        raise OptionError(f"seq_len={seq_len} is outside 1..{config.seq_len} (the model's context length)")
    if window is not None:
        check_window(window, context)
    if quantized is None:
        quantized = quantize_checkpoint(ckpt, plan, tok, show_progress=progress)
    tensor_reports = quantization_reports(ckpt, quantized, progress=progress) if reports else []
    blobs = weight_blobs(ckpt, quantized, weight_layout)
    if rope_table:
        blobs.append(rope_table_blob(config, context))
    blobs += tokenizer_blobs(tok)
    data = layout(blobs)
    max_token_length = max(tok.max_token_length, max((len(p) for p in tok.pieces), default=1))
    model = GeneratedModel(config, context, plan, blobs, tensor_reports, kv_type, data, max_token_length, weight_layout)
    model.window = window
    model.add_space_prefix, model.add_bos = tok.add_space_prefix, tok.add_bos
    if kv_type == "q16" or plan.quantized:
        model.kv_q16_scales = kvq16.calibrated_scales(ckpt, show_progress=progress).as_array()
    return model


def write_sources(
    model: GeneratedModel,
    out_dir: str | Path,
    *,
    model_name: str,
    checkpoint_name: str = "checkpoint.bin",
    tokenizer_name: str = "tokenizer.bin",
    gnu_stack_note: bool = True,
    weights_file: str | Path | None = None,
) -> None:
    """Write ``model_config.h``, ``model_weights.c``, ``model_data.S`` and the data file into ``out_dir``.

    With ``weights_file`` (a path) the weights and tokenizer are not linked in: that file gets them behind a
    header (llmcu.builder.weightsfile), model_data.S only reserves the space the program maps it over, and
    model_weights.c points into that space by offset."""
    check_kv_type(model.kv_type)
    if model.kv_type == "q16" and model.kv_q16_scales is None:
        raise LlmcuError("kv_type=q16 needs the KV scales (codegen.prepare measures them)")
    config, plan, blobs = model.config, model.plan, model.blobs
    out = Path(out_dir)
    env = environment()
    wf = None
    if weights_file is not None:
        if model.rope_table:  # the runtime names the table by its symbol, which a weights file does not define
            raise OptionError("rope_table=yes cannot go with weights_file=yes")
        label = f"{model_name} {plan.name}"  # the arrangement too, when it is not the reference's: users read it
        if model.weight_layout != layouts.REFERENCE:
            label += f" {model.weight_layout}"
        wf = weightsfile.describe(config, plan, blobs, len(model.data), label, model.weight_layout)
    common = {"version": __version__, "config": config, "blobs": blobs, "weights_file": wf}
    qtypes = [(kind, QTYPE_CODES[plan.qtype(kind)]) for kind in ("tok_embeddings", *LAYER_MATRICES, "wcls")]
    if config.shared_classifier:  # the classifier *is* the embedding table
        qtypes[-1] = ("wcls", QTYPE_CODES[plan.qtype("tok_embeddings")])
    header = env.get_template("model_config.h.j2").render(
        **common,
        checkpoint_name=checkpoint_name,
        tokenizer_name=tokenizer_name,
        model_name=model_name,
        quant_name=plan.name,
        seq_len=model.seq_len,
        group_size=plan.group_size,
        qtypes=qtypes,
        any_quantized=any(code != 0 for _, code in qtypes),
        max_token_length=model.max_token_length,
        add_space_prefix=int(model.add_space_prefix),
        add_bos=int(model.add_bos),
        tokenizer_bytes=model.tokenizer_bytes(),
        weight_bytes=model.weight_bytes(),
        kv_type=model.kv_type,
        kv_code=KV_CODES[model.kv_type],
        kv_cache_bytes=model.kv_cache_bytes(),
        rope_table=model.rope_table,
        norm_eps=c_float_literal(config.norm_eps),
        rope_theta=c_float_literal(config.rope_theta),
        window=model.window,
    )
    by_symbol = {blob.symbol: blob for blob in blobs}
    ref = _reference(by_symbol, wf)
    q16_scales = _c_float_table(model.kv_q16_scales) if model.kv_type == "q16" else None
    weights_c = env.get_template("model_weights.c.j2").render(
        **common, tensor=_tensor_initializer(by_symbol, ref), ref=ref, kv_q16_scales=q16_scales
    )
    assembly = env.get_template("model_data.S.j2").render(**common, data_file=DATA_FILE, gnu_stack_note=gnu_stack_note)
    # The data first: the sources that name it are written last, so they never point at a stale file.
    write_bytes_atomic(out / DATA_FILE, model.data)
    if wf is not None and weights_file is not None:
        weightsfile.write_weights_file(weights_file, wf, model.data)
    write_text_atomic(out / "model_config.h", header)
    write_text_atomic(out / "model_weights.c", weights_c)
    write_text_atomic(out / "model_data.S", assembly)


def generate(
    ckpt: Checkpoint,
    tok: Tokenizer,
    plan: QuantPlan,
    out_dir: str | Path,
    *,
    model_name: str,
    tokenizer_name: str = "tokenizer.bin",
    seq_len: int | None = None,
    gnu_stack_note: bool = True,
    progress: bool = False,
    kv_type: str = "f32",
) -> GeneratedModel:
    """:func:`prepare` and :func:`write_sources` in one step."""
    model = prepare(ckpt, tok, plan, seq_len=seq_len, kv_type=kv_type, progress=progress)
    write_sources(
        model,
        out_dir,
        model_name=model_name,
        checkpoint_name=ckpt.path.name if ckpt.path else "checkpoint.bin",
        tokenizer_name=tokenizer_name,
        gnu_stack_note=gnu_stack_note,
    )
    return model
