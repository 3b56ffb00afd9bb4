"""Boards in a labgrid farm: acquire a place, find its console and its probe, release it at the end.

A place (``labgrid-client -p NAME create`` + ``add-match``) groups an exporter's resources. llmcu uses:

- a ``NetworkSerialPort`` (an exporter's ``USBSerialPort``/``RawSerialPort`` through ser2net, or one declared
  directly): the console, opened as ``rfc2217://host:port`` (protocol rfc2217) or ``socket://host:port``
  (raw) by pyserial. A place with several names the one to use in the hardware map (``labgrid.serial``) or
  calls it ``console``.
- the probe for pyOCD: ``labgrid.probe`` in the hardware map, else the place's tag ``pyocd_probe`` (any pyOCD
  probe spec, e.g. ``remote:lab-host:5555`` for ``pyocd server --allow-remote`` running beside the board),
  else its tag ``probe_uid`` (a probe on this machine). A ``NetworkUSBDebugger`` in the place tells which
  exporter host the probe hangs off, for the messages.

Resources an exporter only reaches through SSH (``--isolated``, or LG_PROXY) are forwarded the way labgrid's
own drivers do it (its sshmanager). labgrid is optional (``pip install labgrid``): it brings grpcio and its
own pyserial fork, so it is imported only when a hardware map names a place.

Everything labgrid-specific goes through ``LabgridClient``, so the logic here is tested with a fake client;
``tests/hil/test_labgrid_backend.py`` also runs it against a real coordinator and exporter on loopback when
labgrid is installed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.errors import LlmcuError
from .hwmap import LabgridSpec

CONNECT_TIMEOUT = 10.0  # seconds to reach the coordinator and get its places


class LabgridError(LlmcuError):
    """labgrid is missing, the coordinator cannot be reached, or the place cannot be used."""


@dataclass(frozen=True)
class PlaceView:
    name: str
    acquired: str = ""  # "host/user" of whoever holds it, "" when free
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceView:
    cls: str
    name: str
    params: dict[str, Any]  # host, port, speed, protocol, ... and "extra" (proxy, proxy_required)
    avail: bool = True


class LabgridClient(Protocol):
    """The part of labgrid's client this backend uses (the real one wraps labgrid.remote.client)."""

    address: str

    def places(self) -> dict[str, PlaceView]: ...
    def acquire(self, place: str) -> None: ...
    def release(self, place: str) -> None: ...
    def resources(self, place: str) -> list[ResourceView]: ...
    def forward(self, proxy: str, host: str, port: int) -> tuple[str, int]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PlaceResources:
    """What a test needs of an acquired place."""

    place: str
    coordinator: str
    serial_url: str
    baud: int
    probe: str  # pyOCD probe spec ("" when the place names none)
    probe_host: str = ""  # the exporter host of the place's NetworkUSBDebugger, if any
    tags: dict[str, str] = field(default_factory=dict)


def _labgrid_missing() -> LabgridError:
    return LabgridError(
        "the hardware map names a labgrid place, but labgrid is not installed: pip install labgrid "
        "(it is optional: it pulls grpcio and replaces pyserial with its own fork, pyserial-labgrid)"
    )


class _RealClient:
    """labgrid's ClientSession (gRPC coordinator, labgrid >= 24) behind the LabgridClient interface."""

    def __init__(self, address: str, timeout: float) -> None:
        try:
            import asyncio

            from labgrid.remote.client import ClientSession, ensure_event_loop  # type: ignore[import-not-found]
            from labgrid.util.proxy import proxymanager  # type: ignore[import-not-found]
        except ImportError:
            raise _labgrid_missing() from None
        self.address = address
        self._asyncio = asyncio
        self.loop = ensure_event_loop()
        grpc_address = proxymanager.get_grpc_address(address, default_port=20408)
        self.session = ClientSession(grpc_address, self.loop)
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.session.start(), timeout))
        except (TimeoutError, Exception) as error:
            self._stop()
            message = "no answer" if isinstance(error, TimeoutError) else str(error)
            raise LabgridError(f"cannot reach the labgrid coordinator at {address}: {message}") from None

    def _run(self, coroutine: Any, place: str) -> None:
        from labgrid.remote.client import Error  # type: ignore[import-not-found]

        self.session.args = argparse.Namespace(place=place, allow_unmatched=False, kick=False)
        try:
            self.loop.run_until_complete(coroutine())
        except Error as error:
            raise LabgridError(f"labgrid ({self.address}): {' '.join(map(str, error.args))}") from None

    def places(self) -> dict[str, PlaceView]:
        return {name: PlaceView(name, place.acquired or "", dict(place.tags)) for name, place in
                self.session.places.items()}  # fmt: skip

    def acquire(self, place: str) -> None:
        self._run(self.session.acquire, place)

    def release(self, place: str) -> None:
        self._run(self.session.release, place)

    def resources(self, place: str) -> list[ResourceView]:
        entries = self.session.get_target_resources(self.session.get_place(place))
        return [ResourceView(entry.cls, name, dict(entry.params), bool(entry.avail))
                for (name, _), entry in entries.items()]  # fmt: skip

    def forward(self, proxy: str, host: str, port: int) -> tuple[str, int]:
        from labgrid.util.ssh import sshmanager  # type: ignore[import-not-found]

        return "localhost", sshmanager.request_forward(proxy, host, port)

    def _stop(self) -> None:
        try:
            self.loop.run_until_complete(self.session.stop())
            self.loop.run_until_complete(self.session.close())
        except Exception:  # already broken: nothing more to close
            pass

    def close(self) -> None:
        self._stop()


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> LabgridClient:
    """A client session with the coordinator at ``address`` (HOST[:PORT], port 20408 by default)."""
    return _RealClient(address, timeout)


def labgrid_available() -> bool:
    try:
        import labgrid  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def place_state(spec: LabgridSpec, connector: Callable[[str], LabgridClient] = connect) -> str:
    """ "" when the place exists and is free, else why it cannot be used (for --hil auto)."""
    try:
        client = connector(spec.address)
    except LabgridError as error:
        return str(error)
    try:
        places = client.places()
        if spec.place not in places:
            return f"labgrid place {spec.place} does not exist at {spec.address}"
        if places[spec.place].acquired:
            return f"labgrid place {spec.place} is acquired by {places[spec.place].acquired}"
        return ""
    finally:
        client.close()


def _serial_resource(resources: list[ResourceView], wanted: str, place: str) -> ResourceView:
    serials = [r for r in resources if r.cls == "NetworkSerialPort"]
    if wanted:
        chosen = [r for r in serials if r.name == wanted]
        if not chosen:
            names = ", ".join(r.name for r in serials) or "none"
            raise LabgridError(f"labgrid place {place} has no NetworkSerialPort named {wanted!r} (it has: {names})")
        return chosen[0]
    if not serials:
        classes = ", ".join(sorted({r.cls for r in resources})) or "no resources"
        raise LabgridError(f"labgrid place {place} has no serial port (NetworkSerialPort) for the console; it has: "
                           f"{classes}")  # fmt: skip
    if len(serials) > 1:
        named = [r for r in serials if r.name == "console"]
        if named:
            return named[0]
        names = ", ".join(r.name for r in serials)
        raise LabgridError(f"labgrid place {place} has several serial ports ({names}): name the console in the "
                           "hardware map (labgrid: {serial: NAME}) or call it `console`")  # fmt: skip
    return serials[0]


def serial_url(resource: ResourceView, client: LabgridClient) -> tuple[str, int]:
    """The pyserial URL of a NetworkSerialPort and its baud rate, through an SSH forward when needed."""
    params = resource.params
    host, port = str(params["host"]), params.get("port")
    if not port:
        raise LabgridError(f"serial port {resource.name} is not exported yet (no TCP port: is ser2net running?)")
    extra = params.get("extra") or {}
    proxy = os.environ.get("LG_PROXY", "") or (str(extra.get("proxy", "")) if extra.get("proxy_required") else "")
    if proxy:
        host, port = client.forward(proxy, host, int(port))
    protocol = str(params.get("protocol", "rfc2217"))
    if protocol not in ("rfc2217", "raw"):
        raise LabgridError(f"serial port {resource.name} uses protocol {protocol!r}; llmcu reads rfc2217 or raw")
    scheme = "rfc2217" if protocol == "rfc2217" else "socket"
    return f"{scheme}://{host}:{int(port)}", int(params.get("speed", 115200))


def describe_resources(place: str, address: str, tags: dict[str, str], resources: list[ResourceView],
                       spec: LabgridSpec, client: LabgridClient) -> PlaceResources:  # fmt: skip
    """The console URL and the probe of an acquired place."""
    missing = [r.name for r in resources if not r.avail]
    if missing:
        raise LabgridError(f"labgrid place {place}: resources not available (exporter down or device unplugged): "
                           f"{', '.join(missing)}")  # fmt: skip
    url, baud = serial_url(_serial_resource(resources, spec.serial, place), client)
    debuggers = [r for r in resources if r.cls == "NetworkUSBDebugger"]
    probe_host = str(debuggers[0].params.get("host", "")) if debuggers else ""
    probe = spec.probe or tags.get("pyocd_probe", "") or tags.get("probe_uid", "")
    return PlaceResources(place, address, url, baud, probe, probe_host, dict(tags))


class LabgridPlace:
    """Acquires a place on entry and releases it on exit::

    with LabgridPlace(LabgridSpec(place="nucleo-1", coordinator="lab:20408")) as resources:
        resources.serial_url, resources.probe
    """

    def __init__(self, spec: LabgridSpec, connector: Callable[[str], LabgridClient] = connect) -> None:
        self.spec = spec
        self._connector = connector
        self._client: LabgridClient | None = None
        self._acquired = False
        self.resources: PlaceResources | None = None

    def acquire(self) -> PlaceResources:
        address = self.spec.address
        self._client = client = self._connector(address)
        try:
            places = client.places()
            if self.spec.place not in places:
                known = ", ".join(sorted(places)) or "none"
                raise LabgridError(f"labgrid place {self.spec.place} does not exist at {address} (places: {known})")
            if places[self.spec.place].acquired:
                raise LabgridError(f"labgrid place {self.spec.place} is acquired by "
                                   f"{places[self.spec.place].acquired}")  # fmt: skip
            client.acquire(self.spec.place)
            self._acquired = True
            tags = client.places()[self.spec.place].tags
            self.resources = describe_resources(self.spec.place, address, tags, client.resources(self.spec.place),
                                                self.spec, client)  # fmt: skip
            return self.resources
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self._acquired:
                self._acquired = False
                client.release(self.spec.place)
        finally:
            client.close()

    def __enter__(self) -> PlaceResources:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
