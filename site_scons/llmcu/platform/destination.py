"""Where a Linux target's board is: ``board=user@host[:port]`` parsed (the build checks it; llmcu.device.sshdeploy
uses it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.errors import OptionError

_DESTINATION = re.compile(r"(?:(?P<user>[^@\s:/]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?")


@dataclass(frozen=True)
class Destination:
    """``[user@]host[:port]``; a bare host name may be an alias from ~/.ssh/config."""

    user: str
    host: str
    port: int | None = None

    @property
    def login(self) -> str:
        host = self.host.strip("[]")
        return f"{self.user}@{host}" if self.user else host

    def __str__(self) -> str:
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


def parse_destination(text: str) -> Destination:
    match = _DESTINATION.fullmatch(text.strip())
    if not match or text.strip().startswith("-"):
        raise OptionError(f"board={text!r} is not user@host[:port] (e.g. root@192.168.1.50 or root@rzv2l:2222)")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise OptionError(f"board={text!r}: port {port} is not in 1..65535")
    return Destination(match["user"] or "", match["host"], port)
