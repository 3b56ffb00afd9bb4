"""An SDRAM chip behind the STM32H743's FMC, for the unicorn register model (support.mmio_emu): the CPU's address is
split the way the FMC splits it, from the FMC_SDCRx the board layer programmed (byte lane, column, internal bank,
row: RM0433 "SDRAM address mapping"), and goes to the chip's pins; cells hold what was written and when.

Faults are planted at the pins and in the chip, where a bad board has them:
  * ``stuck_data_bit=(bit, value)``: data line D<bit> reads ``value`` whatever was written (a short to a rail);
  * ``open_address_line=k``: A<k> is not connected, so the chip sees 0 there in both the row and the column;
  * ``shorted_address_lines=(j, k)``: A<j> and A<k> touch: the chip sees their wired AND on both;
  * ``refresh_lost=True``: no refresh reaches the chip (a dead SDCKE, a refresh timer never started): a cell not
    rewritten within the retention time reads back discharged (0).
Refresh is also lost when FMC_SDRTR was never programmed, or programmed so slow that the chip's rows are not all
refreshed within its refresh period; the model checks that from the registers, like the chip would suffer it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SdramChip:
    base: int  # 0xC0000000 (bank 1) or 0xD0000000 (bank 2)
    cpu_hz: int = 480_000_000
    sdclk_hz: int = 100_000_000
    refresh_ms: float = 64.0  # the datasheet's refresh period: every row within it
    retention_ms: float = 64.0  # what a cell is guaranteed to hold without refresh
    stuck_data_bit: tuple[int, int] | None = None
    open_address_line: int | None = None
    shorted_address_lines: tuple[int, int] | None = None
    refresh_lost: bool = False
    cells: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)  # (bank, row, col) -> (v, t)
    geometry: tuple[int, int, int, int] | None = None  # column bits, row bits, bus bytes, internal banks
    refresh_count: int = 0  # FMC_SDRTR COUNT
    initialised: bool = False  # the JEDEC sequence ran: clock enable, precharge all, auto-refresh, load mode

    # ---- the FMC registers, as the board layer programs them ----

    def configure(self, sdcr: int) -> None:
        """FMC_SDCRx of this chip's bank: NC [1:0] (8 + n column bits), NR [3:2] (11 + n row bits), MWID [5:4]
        (8/16/32 bits), NB [6] (2 or 4 internal banks)."""
        self.geometry = (8 + (sdcr & 3), 11 + (sdcr >> 2 & 3), 1 << (sdcr >> 4 & 3), 4 if sdcr >> 6 & 1 else 2)

    def command(self, mode: int) -> None:
        """FMC_SDCMR: after a load mode register command (mode 4) that followed auto-refresh (3) the chip works."""
        if mode == 4:
            self.initialised = True

    @property
    def refresh_works(self) -> bool:
        if self.refresh_lost or self.refresh_count == 0 or self.geometry is None:
            return False
        rows = 1 << self.geometry[1]
        period_s = rows * (self.refresh_count + 20) / self.sdclk_hz
        return period_s * 1000 <= self.refresh_ms

    # ---- the chip ----

    def _pins(self, value: int) -> int:
        """An address as the chip's A pins see it."""
        if self.open_address_line is not None:
            value &= ~(1 << self.open_address_line)
        if self.shorted_address_lines is not None:
            j, k = self.shorted_address_lines
            both = (value >> j) & (value >> k) & 1
            value = (value & ~(1 << j | 1 << k)) | both << j | both << k
        return value

    def _cell(self, offset: int) -> tuple[tuple[int, int, int], int]:
        """(bank, row, column) of the bus word holding ``offset``, and the byte offset within that word."""
        assert self.geometry is not None, "SDRAM accessed before FMC_SDCRx was written"
        column_bits, row_bits, bus_bytes, banks = self.geometry
        lane = offset % bus_bytes
        word = offset // bus_bytes
        column = word & ((1 << column_bits) - 1)
        bank = (word >> column_bits) & (banks - 1)
        row = (word >> (column_bits + banks.bit_length() - 1)) & ((1 << row_bits) - 1)
        return (bank, self._pins(row), self._pins(column)), lane

    def _data(self, value: int, bus_bytes: int) -> int:
        if self.stuck_data_bit is not None:
            bit, level = self.stuck_data_bit
            if bit < 8 * bus_bytes:
                value = (value & ~(1 << bit)) | level << bit
        return value

    def read(self, offset: int, size: int, now: int) -> int:
        if not self.initialised:
            return 0xFFFFFFFF & ((1 << 8 * size) - 1)  # an SDRAM never brought up answers nothing useful
        bus_bytes = self.geometry[2]
        value = 0
        for index in range(0, size, min(size, bus_bytes)):  # one bus word, or several for a wide access
            cell, lane = self._cell(offset + index)
            stored, written = self.cells.get(cell, (0, now))
            if not self.refresh_works and now - written > self.retention_ms * self.cpu_hz / 1000:
                stored = 0  # discharged
            word = self._data(stored, bus_bytes) >> 8 * lane
            value |= (word & ((1 << 8 * min(size, bus_bytes)) - 1)) << 8 * index
        return value

    def write(self, offset: int, size: int, value: int, now: int) -> None:
        if not self.initialised:
            return
        bus_bytes = self.geometry[2]
        step = min(size, bus_bytes)
        for index in range(0, size, step):
            cell, lane = self._cell(offset + index)
            old = self.cells.get(cell, (0, now))[0]
            mask = ((1 << 8 * step) - 1) << 8 * lane
            part = (value >> 8 * index & ((1 << 8 * step) - 1)) << 8 * lane
            self.cells[cell] = ((old & ~mask) | part, now)
