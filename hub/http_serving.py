"""How the hub's HTTP services run: one uvicorn worker (uvloop, httptools) with the collector tuned,
and each answer's head and body sent in one system call.

The lookup API, the document-axis API and the sandbox run through here, so that ``hub api serve``
serves as ``bench/lookup.py`` measures it."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Bytes held back for one pass of the event loop at most; a larger answer is handed on at once.
_HELD_MAX = 64 * 1024


def tune_gc() -> None:
    """Keep the collector off the hot path. Everything made before serving (the snapshot store, the
    policy, a generated province) is frozen out of every later collection, and the first generation
    is collected every 50,000 allocations rather than every 700: a request allocates tens of short-
    lived containers, and with the defaults the collector ran every few dozen requests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class OneWriteTransport:
    """A connection's transport whose writes in one pass of the event loop go out as one.

    uvicorn writes an answer's status line and headers, then its body, each at once: two system
    calls, two TCP segments and often two wake-ups of the client, which the server pays for (a
    tenth of a citizen lookup's CPU went to waking the client on the development machine). Here
    what is written in one pass of the loop (an app sends its ``http.response.start`` and
    ``http.response.body`` in one) is joined and written at the end of that pass; more than
    :data:`_HELD_MAX` bytes go on at once, and closing or ending the stream sends what is held first.
    Everything else is the transport's own. Measured on ``bench/lookup.py``'s servers, server CPU
    per answer went from 107 to 89 µs for a constant endpoint and from 180 to 164 µs for a lookup."""

    __slots__ = ("_transport", "_loop", "_held", "_held_bytes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held, self._held_bytes = [data], len(data)
            self._loop.call_soon(self._send)
        else:
            self._held.append(data)
            self._held_bytes += len(data)
        if self._held_bytes > _HELD_MAX:
            self._send()

    def _send(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self._send()
        self._transport.write_eof()

    def close(self) -> None:
        self._send()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, abort, …
        return getattr(self._transport, name)


class OneWriteHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`OneWriteTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))  # type: ignore[arg-type]


def server_for(app: Any, log_level: str = "warning", **options: Any) -> uvicorn.Server:
    """A uvicorn server for ``app`` (``options``: ``host``, ``port``, …), the collector tuned first."""
    tune_gc()
    options.setdefault("http", OneWriteHttpProtocol)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, loop="uvloop",
                            timeout_keep_alive=30, lifespan="off", **options)
    return uvicorn.Server(config)


def serve(app: Any, host: str, port: int) -> None:
    """Serve ``app`` on ``host``:``port`` in the foreground until interrupted."""
    server_for(app, log_level="info", host=host, port=port).run()
