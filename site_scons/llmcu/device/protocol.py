"""Parser for the llmcu output protocol (specified in runtime_c/README.md).

The same byte stream comes from the host program, a UART or QEMU's serial port::

    \\x02llmcu 1 key=value ...\\n      header (start marker)
    generated text ... \\n
    \\x1etok pos=0 token=1 next=403 cost=1234\\n   one record per forward pass
    \\x1esum tokens=... \\n
    \\x03llmcu end status=ok\\n         end marker

The parser is incremental (feed it chunks as they arrive), skips anything before the start marker (boot
messages, stale bytes), and starts over when a new start marker arrives mid-run (a board that reset).

A firmware adds lines of its own around a run (targets/cortex-m/firmware_main.c, fault.c), which the parser
picks out of the bytes before the start marker::

    \x05llmcu ready 1 target=... model=... quant=...\n      waiting for a command (``ready``)
    \x15llmcu error reason=bad_command detail=steps\n      the command was refused (status ``rejected``)
    \x03llmcu end status=fault reason=UsageFault pc=0x...\n a fault, before or during a run

An end line also ends a record cut short (a fault while the records were being written).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.errors import ProtocolError

# Where bytes go as they arrive: the generated text to a terminal, every byte to a run log's raw.bin.
ByteSink = Callable[[bytes], None]

STX, RS, ETX = b"\x02", b"\x1e", b"\x03"
ENQ, NAK = b"\x05", b"\x15"  # a firmware's ready and error lines


@dataclass
class TokenRecord:
    pos: int
    token: int
    next: int
    cost: int


@dataclass
class RunOutput:
    """Everything one run printed. ``complete`` is True once the end marker (or a refusal) arrived.

    ``end`` holds every field of the end line (a fault's registers) or of a refusal's error line; ``ready``
    the fields of the last ready line seen before the run.
    """

    header: dict[str, str] = field(default_factory=dict)
    text: bytes = b""
    tokens: list[TokenRecord] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)  # builds with phases=1: where one pass's cost went
    selftest: list[dict[str, str]] = field(
        default_factory=list
    )  # selftest=1 firmware: one per test (llmcu.device.selftest)
    status: str = ""
    reason: str = ""
    complete: bool = False
    restarts: int = 0
    preamble: bytes = b""
    end: dict[str, str] = field(default_factory=dict)
    ready: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.complete and self.status == "ok"

    def token_sequence(self) -> list[int]:
        """Every token fed or chosen, in order: the first fed token, then each record's next token."""
        if not self.tokens:
            return []
        return [self.tokens[0].token, *(record.next for record in self.tokens)]

    def summary_number(self, key: str) -> float:
        try:
            return float(self.summary[key])
        except (KeyError, ValueError):
            raise ProtocolError(f"summary has no numeric {key!r}: {self.summary}") from None


def _fields(line: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in line.split():
        key, sep, value = item.partition("=")
        if sep:
            pairs[key] = value
    return pairs


class ProtocolParser:
    """Feed bytes; ``on_text`` is called with each new piece of generated text as it arrives."""

    def __init__(self, on_text: Callable[[bytes], None] | None = None) -> None:
        self.on_text = on_text
        self.output = RunOutput()
        self._state = "preamble"  # preamble -> header -> text -> records -> done
        self._line = bytearray()

    def feed(self, data: bytes) -> RunOutput:
        for byte in data:
            self._feed_byte(bytes((byte,)))
        return self.output

    def _feed_byte(self, byte: bytes) -> None:
        if byte == STX:  # a (re)start: everything before belongs to an earlier run or to boot noise
            if self._state != "preamble":
                restarts = self.output.restarts + 1
                self.output = RunOutput(restarts=restarts)
            self._state = "header"
            self._line.clear()
            return
        if self._state == "preamble":
            self.output.preamble += byte
            self._collect(byte, self._preamble_line)
        elif self._state == "header":
            self._collect(byte, self._header_line)
        elif self._state == "text":
            if byte in (RS, ETX):
                self._state = "records"
                self._line[:] = byte
            else:
                self.output.text += byte
                if self.on_text is not None:
                    self.on_text(byte)
        elif self._state == "records":
            if byte == ETX:  # the end line, even if it cuts a record short
                self._line.clear()
            self._collect(byte, self._record_line)

    def _collect(self, byte: bytes, handle: Callable[[str], None]) -> None:
        if byte == b"\n":
            line = self._line.decode("utf-8", errors="replace")
            self._line.clear()
            handle(line)
        else:
            self._line += byte

    def _preamble_line(self, line: str) -> None:
        """A firmware's own lines, wherever they start in the noise before a run."""
        for marker in (ENQ.decode(), NAK.decode(), ETX.decode()):
            at = line.rfind(marker)
            if at < 0:
                continue
            words = line[at + 1 :].split()
            if marker == ENQ.decode() and words[:2] == ["llmcu", "ready"]:
                self.output.ready = {"version": words[2] if len(words) > 2 else "", **_fields(line[at + 1 :])}
            elif marker == NAK.decode() and words[:2] == ["llmcu", "error"]:
                self._finish("rejected", _fields(line[at + 1 :]))
            elif marker == ETX.decode() and words[:2] == ["llmcu", "end"]:
                values = _fields(line[at + 1 :])
                self._finish(values.get("status", ""), values)
            return

    def _finish(self, status: str, values: dict[str, str]) -> None:
        self.output.status = status
        self.output.reason = values.get("reason", "")
        self.output.end = values
        self.output.complete = True
        self._state = "done"

    def _header_line(self, line: str) -> None:
        words = line.split()
        if len(words) < 2 or words[0] != "llmcu":
            raise ProtocolError(f"bad start line {line!r}: expected 'llmcu <version> key=value ...'")
        self.output.header = {"version": words[1], **_fields(line)}
        self._state = "text"

    def _record_line(self, line: str) -> None:
        marker, body = line[:1], line[1:]
        if marker == RS.decode():
            kind, _, rest = body.partition(" ")
            values = _fields(rest)
            if kind == "tok":
                try:
                    self.output.tokens.append(
                        TokenRecord(int(values["pos"]), int(values["token"]), int(values["next"]), int(values["cost"]))
                    )
                except (KeyError, ValueError):
                    raise ProtocolError(f"bad token record {body!r}") from None
            elif kind == "sum":
                self.output.summary = values
            elif kind == "phase":
                self.output.phases = values
            elif kind == "selftest":
                self.output.selftest.append(values)
        elif marker == ETX.decode():
            values = _fields(body)
            self._finish(values.get("status", ""), values)
        elif line.strip():
            raise ProtocolError(f"unexpected line after the text: {line!r}")


def parse(data: bytes) -> RunOutput:
    """Parse a whole captured stream."""
    return ProtocolParser().feed(data)


# Cortex-M fault status bits (CFSR: MMFSR, BFSR, UFSR), named as in the ARMv7-M Architecture Reference Manual.
CFSR_BITS = {
    0: "IACCVIOL", 1: "DACCVIOL", 3: "MUNSTKERR", 4: "MSTKERR", 5: "MLSPERR", 7: "MMARVALID",
    8: "IBUSERR", 9: "PRECISERR", 10: "IMPRECISERR", 11: "UNSTKERR", 12: "STKERR", 13: "LSPERR", 15: "BFARVALID",
    16: "UNDEFINSTR", 17: "INVSTATE", 18: "INVPC", 19: "NOCP", 24: "UNALIGNED", 25: "DIVBYZERO",
}  # fmt: skip


def _hex(end: dict[str, str], key: str) -> int | None:
    try:
        return int(end[key], 16)
    except (KeyError, ValueError):
        return None


def _overflow_lead(end: dict[str, str]) -> str:
    """What a stack overflow report (reason=stack_overflow, targets/cortex-m/fault.c) means, and what to do."""
    sp, limit, top = _hex(end, "sp"), _hex(end, "stack_limit"), _hex(end, "stack_top")
    lead = "stack overflow"
    if limit is not None and top is not None and top > limit:
        size = top - limit
        lead += f": the {size:,}-byte stack ({limit:#010x}-{top:#010x}) ran into the MPU guard below it"
        if sp is not None and sp < limit:
            lead += f" (sp={sp:#010x}, {limit - sp:,} bytes below its limit)"
        suggested = 1 << max(size * 2 - 1, 1).bit_length()  # at least twice the size, a power of two
        amount = f"{suggested // 1024}K" if suggested >= 1024 else str(suggested)  # never "stack=0K"
        lead += f"; build with a larger stack, e.g. stack={amount}"
    return f"{lead}; {end.get('exception', 'fault')}"


# A boot that could not finish (targets/stm32h743/boot_fail.c: reason=<step> stage=boot): what never answered,
# and what to check on the board.
BOOT_FAILURES = {
    "supply_not_ready": "the core supply never reported ready (PWR_CSR1 ACTVOSRDY): check the VCAP capacitors "
    "and that the board's supply is the LDO",
    "vos1_not_ready": "the regulator never reached voltage scale 1 (PWR_D3CR VOSRDY)",
    "vos0_not_ready": "the regulator never reached voltage scale 0 with the overdrive (PWR_D3CR VOSRDY): is the "
    "silicon revision V?",
    "hse_not_ready": "the HSE oscillator never started (RCC_CR HSERDY): check the crystal, or on a NUCLEO that the "
    "ST-LINK's 8 MHz MCO reaches OSC_IN; `hse_bypass` in the board file must match how OSC_IN is driven",
    "pll1_not_locked": "PLL1 never locked (RCC_CR PLL1RDY): check `hse_hz` and the [clock.pll1] factors",
    "pll2_not_locked": "PLL2 never locked (RCC_CR PLL2RDY): check `hse_hz` and the [clock.pll2] factors",
    "flash_latency_not_set": "FLASH_ACR did not take the new wait states",
    "sysclk_not_switched": "the system clock did not switch to PLL1 (RCC_CFGR SWS)",
    "hsi_not_ready": "the internal HSI oscillator did not report ready (RCC_CR HSIRDY)",
    "sysclk_not_hsi": "the system clock did not switch back to HSI from what ran before (a bootloader's PLL)",
    "pll_not_stopped": "a PLL or the HSE left running by what ran before did not stop (RCC_CR)",
    "wrong_part": "the chip is not the part this image was built for (expected and found are DEV_ID << 16 | flash "
    "KB, from DBGMCU_IDCODE and the flash-size word): build for this board's part (`part` in its board file)",
    "qspi_busy": "the QUADSPI interface never went idle, not even after an abort: check its pins in the board file",
    "qspi_no_answer": "no QSPI flash answered its JEDEC ID (9Fh read all 0 or all 1 bits): check that the chip is "
    "fitted and powered and the board file's [qspi.pins]",
    "qspi_wrong_chip": "another QSPI flash than the board file's answered (expected and found are JEDEC IDs: "
    "manufacturer, type, capacity): fix `chip` and `jedec_id` in [qspi], and its commands",
    "qspi_quad_enable_not_set": "the QSPI flash's Quad Enable bit did not read back set: is its status register "
    "write-protected (SRP with /WP low)? Check [qspi.quad_enable] against the chip's datasheet",
    "qspi_no_transfer_complete": "a QUADSPI command never completed: check the QSPI pins and that a flash is fitted",
    "qspi_flash_busy": "the QSPI NOR flash stayed busy after its status register write: check the chip, its "
    "wiring and `status_write_timeout_ms`",
}


def describe_fault(end: dict[str, str]) -> str:
    """One line from a fault's end line fields: what happened (a boot step that never finished, a stack
    overflow, the watchdog, or the exception), where, and what the fault status register says."""
    if end.get("stage") == "boot":
        reason = end.get("reason", "?")
        what = BOOT_FAILURES.get(reason, "a bring-up step never finished")
        if "expected" in end or "found" in end:
            what += f" (expected {end.get('expected', '?')}, found {end.get('found', '?')})"
        return (f"the board could not bring itself up: {reason}: {what}. It halted with its console on the reset "
                f"clock (silicon revision {end.get('rev', '?')})")  # fmt: skip
    try:
        cfsr = int(end.get("cfsr", "0"), 16)
    except ValueError:
        cfsr = 0
    flags = [name for bit, name in CFSR_BITS.items() if cfsr >> bit & 1]
    reason = end.get("reason", "fault")
    if reason == "stack_overflow":
        lead = _overflow_lead(end)
    elif reason == "watchdog":
        lead = "watchdog: the firmware made no progress for the watchdog's time (hung); it was"
    else:
        lead = reason
    parts = [f"{lead} at pc={end.get('pc', '?')}", f"lr={end.get('lr', '?')}"]
    parts.append(f"cfsr={end.get('cfsr', '?')}" + (f" ({' '.join(flags)})" if flags else ""))
    if cfsr & (1 << 4 | 1 << 12):  # MSTKERR, STKERR: the core could not push the frame, so pc and lr are lost
        parts[0] = parts[0].replace(f" at pc={end.get('pc', '?')}", " (pc and lr lost: no exception frame)")
        parts.pop(1)
    for key in ("hfsr", "mmfar", "bfar", "sp"):
        if key in end:
            parts.append(f"{key}={end[key]}")
    return ", ".join(parts)


def describe_failure(output: RunOutput) -> str:
    """What a run that ended with ``status=error`` (or a fault) means, for the user: its reason, and what that
    reason's fields say (``prompt_too_long: the prompt is 36 tokens ...``)."""
    end, why = output.end, output.reason or output.status or "no end line"
    if output.reason == "prompt_too_long" and "prompt_tokens" in end:
        needed, context = end["prompt_tokens"], end.get("context", "?")
        over = int(needed) - int(context) if needed.isdigit() and context.isdigit() else "?"
        return (f"{why}: the prompt is {needed} tokens (BOS included) and this build's context holds {context}: "
                f"shorten it by {over} tokens, or build with a longer seq_len= (up to the model's)")  # fmt: skip
    if output.reason == "prompt_too_long" and "prompt_bytes" in end:
        return (f"{why}: the prompt is {end['prompt_bytes']} bytes and the runtime's encoder takes at most "
                f"{end.get('max_bytes', '?')} (LLMCU_PROMPT_MAX_BYTES)")  # fmt: skip
    if output.status == "fault":
        return f"{why}: {describe_fault(end)}"
    return why


def format_summary(output: RunOutput) -> str:
    """One human line: tokens, speed, cost per token and stack."""
    s = output.summary
    unit = output.header.get("unit", "")
    parts = [f"{s.get('tokens', '?')} tokens ({s.get('prompt_tokens', '?')} prompt)"]
    # a summary line garbled on the wire (UART noise) prints what it can; it must not end the run in a traceback
    tok_per_s, cost, stack = (_finite(s.get(key)) for key in ("tok_per_s", "cost_per_token", "peak_stack"))
    if tok_per_s is not None and tok_per_s > 0:
        parts.append(f"{tok_per_s:.1f} tok/s")
    if cost is not None:
        parts.append(f"{cost:,.0f} {unit}/token")
    elif "cost_per_token" in s:
        parts.append(f"{s['cost_per_token']!r} {unit}/token (not a number)")
    if stack is not None and int(stack):
        parts.append(f"peak stack {int(stack):,} B")
    return ", ".join(parts)


def _finite(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
