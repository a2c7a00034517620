"""Running the sandbox's ASGI app with uvicorn: in the foreground (CLI) or in a thread (tests, demo)."""

from __future__ import annotations

import gc
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back with ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def tune_gc() -> None:
    """Keep the collector off the hot path: a page render allocates tens of thousands of short-lived
    objects, and the default thresholds make it scan the (large, static) generated province again and
    again. Freezing what exists now moves the province out of every future collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def server_for(app, log_level: str = "warning") -> uvicorn.Server:
    tune_gc()
    config = uvicorn.Config(app, log_level=log_level, access_log=False, loop="uvloop", http="httptools",
                            timeout_keep_alive=30, lifespan="off")
    return uvicorn.Server(config)


@contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` in a background thread (port 0: a free one); yields the base URL."""
    sock = bind(host, port)
    server = server_for(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="sandbox-http")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("sandbox HTTP server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        gc.unfreeze()  # hand frozen objects back to the collector, so the process can tear down cleanly
