"""What to change when a model does not fit a firmware target: only changes that were planned again and fit.

When the memory planner refuses a build, this tries the build's own options changed one at a time (a smaller
``quant``, another ``weights=`` placement, another ``kv_type``, another board of the target), then two at a
time, each with the real blob sizes (the weights quantized again with the fast absmax fit, since a fit does not
change sizes) and the full plan of every firmware image; the error lists those that fit, never the value a build
already has. Nothing is compiled: the planner runs before any C is generated.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from ..model.kvcache import KV_TYPES, kv_type_candidates
from ..model.quantize import QuantPlan, quantize_checkpoint
from ..platform import stm32h7
from . import codegen, layouts, linuxmem, memplan
from .imageplan import plan_image
from .settings import BuildSettings, FirmwareImage, firmware_images, read_board
from .window import SlidingWindow

# Smaller quantizations than each one, smallest last (bytes per weight at group 32: 4, ~1.1, ~0.6, ~0.56).
SMALLER = {"fp32": ("q8", "q4", "q4z"), "q8": ("q4", "q4z"), "q4": ("q4z",), "q4z": (), "auto": ()}
PLACEMENTS = ("auto", "qspi", "sdram")
MOST_SHOWN = 6


@dataclasses.dataclass(frozen=True)
class Change:
    options: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.options)


def _fits(settings: BuildSettings, images: Iterable[FirmwareImage], model: codegen.GeneratedModel) -> bool:

    images = list(images)
    try:
        first = memplan.choose_kv_type(
            kv_type_candidates(settings.kv_type, model.plan.quantized),
            lambda kind: plan_image(settings, images[0], model, kind),
        )
        for image in images[1:]:
            plan_image(settings, image, model, first.kv_type)
    except memplan.FitError:
        return False
    return True


class _Models:
    """The build's model, or another quant at another context length: the real blobs, no C written."""

    def __init__(
        self, settings: BuildSettings, ckpt: Any, tok: Any, model: codegen.GeneratedModel, quantized: dict[str, Any]
    ) -> None:
        self.settings, self.ckpt, self.tok, self.model, self.quantized = settings, ckpt, tok, model, quantized
        self.models: dict[tuple[str, int], codegen.GeneratedModel] = {}

    def __call__(self, quant: str, seq_len: int) -> codegen.GeneratedModel:
        settings, model = self.settings, self.model
        if (quant, seq_len) not in self.models:
            plan, matrices = model.plan, self.quantized
            if quant:
                plan = QuantPlan(quant, settings.plan.group_size, (), "absmax", "none")
                matrices = quantize_checkpoint(self.ckpt, plan, self.tok)
            self.models[quant, seq_len] = codegen.prepare(
                self.ckpt, self.tok, plan, seq_len=seq_len, kv_type=model.kv_type, rope_table=settings.rope_table,
                weight_layout=layouts.for_kernel_set(settings.kernel_set), quantized=matrices, reports=False,
                window=settings.window,
            )  # fmt: skip
        return self.models[quant, seq_len]


def fitting_changes(
    settings: BuildSettings, ckpt: Any, tok: Any, model: codegen.GeneratedModel, quantized: dict[str, Any]
) -> list[Change]:
    """The changes (one option, then two) whose plans fit; ``quantized`` is the build's own matrices."""
    if settings.linux is not None:
        return linux_changes(settings, _Models(settings, ckpt, tok, model, quantized))
    assert settings.firmware is not None
    model_for = _Models(settings, ckpt, tok, model, quantized)

    options: dict[str, list[str]] = {
        "quant": [] if settings.auto_quant else list(SMALLER.get(settings.plan.default, ())),
        "weights": [w for w in PLACEMENTS if w != settings.firmware.weights],
        "kv_type": [k for k in KV_TYPES if k != settings.kv_type] if settings.kv_type != "auto" else [],
        "board": [b for b in stm32h7.list_boards(settings.target.folder, templates=False) if b != settings.board]
        if (settings.target.folder / "boards").is_dir()
        else [],
    }

    def attempt(change: dict[str, str]) -> bool:
        trial = settings
        if "weights" in change:
            trial = dataclasses.replace(trial, firmware=dataclasses.replace(trial.firmware, weights=change["weights"]))
        if "kv_type" in change:
            trial = dataclasses.replace(trial, kv_type=change["kv_type"])
        images = settings.images
        if "board" in change:
            hil = "qemu" if len(settings.images) > 1 else "none"
            board, board_file = read_board(settings.target, change["board"])
            images = firmware_images(settings.target, board, board_file, settings.out_dir, hil)
        return _fits(trial, images, model_for(change.get("quant", ""), model.seq_len))

    return _search(settings, model_for, options, attempt, lambda trial, m: _fits(trial, settings.images, m))


def linux_fits(settings: BuildSettings, model: codegen.GeneratedModel, kv_type: str) -> str:
    """The KV type a Linux program fits the board's RAM with (``kv_type``, or for auto the first of the automatic
    ones that fits), or "" when none does."""

    assert settings.linux is not None
    kinds = kv_type_candidates(kv_type, model.plan.quantized)
    for kind in kinds:
        need = linuxmem.needs(model, kind, settings.default_threads)
        if need.total <= linuxmem.available(settings.linux.ram_bytes, settings.linux.os_reserve_bytes):
            return kind
    return ""


def linux_changes(settings: BuildSettings, model_for: _Models) -> list[Change]:
    """For a Linux board's RAM: a smaller quant, another KV type, fewer threads, a shorter context; then pairs."""
    options: dict[str, list[str]] = {
        "quant": [] if settings.auto_quant else list(SMALLER.get(settings.plan.default, ())),
        "kv_type": [k for k in KV_TYPES if k != settings.kv_type] if settings.kv_type != "auto" else [],
        "threads": ["1"] if settings.default_threads > 1 else [],
    }
    seq_len = model_for.model.seq_len

    def attempt(change: dict[str, str]) -> bool:
        trial = settings
        if "threads" in change:
            trial = dataclasses.replace(trial, default_threads=int(change["threads"]))
        model = model_for(change.get("quant", ""), seq_len)
        return bool(linux_fits(trial, model, change.get("kv_type", settings.kv_type)))

    return _search(settings, model_for, options, attempt, lambda trial, m: bool(linux_fits(trial, m, settings.kv_type)))


def _search(
    settings: BuildSettings,
    model_for: _Models,
    options: dict[str, list[str]],
    attempt: Callable[[dict[str, str]], bool],
    fits: Callable[[BuildSettings, codegen.GeneratedModel], bool],
) -> list[Change]:
    """Each option's values alone (``attempt`` plans one change), the longest context and the longest sliding
    window (``fits``: a model with the build's other settings); when none of those fits, two options together."""
    singles = [(key, value) for key, values in options.items() for value in values]
    # Changes to this build first (its quant, placement, KV type, context), another board last: buying one is the
    # biggest change.
    found = [Change(((key, value),)) for key, value in singles if key != "board" and attempt({key: value})]
    longest = _longest_context(model_for.model.seq_len, lambda n: fits(settings, model_for("", n)))
    if longest:
        found.append(Change((("seq_len", str(longest)),)))
        found += _sliding(settings, model_for, fits)
    found += [Change(((key, value),)) for key, value in singles if key == "board" and attempt({key: value})]
    if found:
        return found
    pairs = [(a, b) for a, b in itertools.combinations(singles, 2) if a[0] != b[0]]
    return [Change((a, b)) for a, b in pairs if attempt(dict((a, b)))]


def _sliding(
    settings: BuildSettings, model_for: _Models, fits: Callable[[BuildSettings, codegen.GeneratedModel], bool]
) -> list[Change]:
    """A short context stops a story early: with a sliding window the same cache goes on. The longest window that
    fits, planned again (a slid run keeps max_steps records), as ``overflow=slide seq_len=N``; none when the build
    slides already or not even the sinks and two more positions fit."""
    if settings.window is not None:
        return []
    sliding = dataclasses.replace(settings, window=SlidingWindow())
    models = _Models(sliding, model_for.ckpt, model_for.tok, model_for.model, model_for.quantized)
    longest = _longest_context(model_for.model.seq_len, lambda n: fits(sliding, models("", n)),
                               shortest=SlidingWindow().sinks + 2)  # fmt: skip
    return [Change((("overflow", "slide"), ("seq_len", str(longest))))] if longest else []


def _longest_context(seq_len: int, fits: Callable[[int], bool], shortest: int = 1) -> int:
    """The longest context below ``seq_len`` that fits (bisection from ``shortest``; 0 when even that does not)."""
    lo, hi = 0, seq_len - 1
    if hi < shortest or not fits(shortest):
        return 0
    lo = shortest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def advice(
    settings: BuildSettings, ckpt: Any, tok: Any, model: codegen.GeneratedModel, quantized: dict[str, Any]
) -> str:
    """The sentence the planner's error ends with: what was planned again and fits, or that nothing near does."""
    changes = fitting_changes(settings, ckpt, tok, model, quantized)
    if not changes:
        what = "kv_type or threads=" if settings.linux is not None else "weights= placement, kv_type or board"
        return (f"No smaller quant, other {what} (alone or two together) fits: a smaller model, or a shorter "
                "seq_len=, is needed")  # fmt: skip
    shown = "; ".join(str(change) for change in changes[:MOST_SHOWN])
    more = f" (and {len(changes) - MOST_SHOWN} more)" if len(changes) > MOST_SHOWN else ""
    return f"Changes planned again that fit: {shown}{more}"
