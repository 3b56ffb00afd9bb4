"""What can go wrong when flashing a board, as errors a user can act on (llmcu.device.flashing and the modules it
uses: probes, chipcheck, flashimage)."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.errors import LlmcuError


class FlashError(LlmcuError):
    """Flashing a board failed; the message says why and what to do."""


class NoProbeError(FlashError):
    """No debug probe is attached."""


class ProbeSelectionError(FlashError):
    """Several probes are attached and none was chosen, or the chosen one is not attached."""


class ConnectError(FlashError):
    """The probe is there but the chip does not answer."""


class WrongTargetError(FlashError):
    """The chip behind the probe is not the part the target is for."""


class LockedChipError(FlashError):
    """The chip's flash is read-protected (RDP level 1 or 2)."""


class ImageError(FlashError):
    """The firmware file cannot be flashed as it is."""


class ImageTooLargeError(ImageError):
    """The firmware has more bytes than a flash region holds."""


class ProgramError(FlashError):
    """Erasing or programming failed."""


class VerifyError(FlashError):
    """The flash does not hold what was programmed."""

    def __init__(self, message: str, ranges: Sequence[tuple[int, int]]) -> None:
        super().__init__(message)
        self.ranges = list(ranges)  # (first address, last address) of each differing run


class ProbeLostError(FlashError):
    """The probe or the chip stopped answering part-way; running the same command again recovers."""
