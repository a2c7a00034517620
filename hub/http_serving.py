"""How the hub's HTTP services run: one uvicorn worker (uvloop, httptools) with the collector tuned.

The lookup API, the document-axis API and the sandbox run through here, so that ``hub api serve``
serves as ``bench/lookup.py`` measures it."""

from __future__ import annotations

import gc
from typing import Any

import uvicorn


def tune_gc() -> None:
    """Keep the collector off the hot path. Everything made before serving (the snapshot store, the
    policy, a generated province) is frozen out of every later collection, and the first generation
    is collected every 50,000 allocations rather than every 700: a request allocates tens of short-
    lived containers, and with the defaults the collector ran every few dozen requests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def server_for(app: Any, log_level: str = "warning", **options: Any) -> uvicorn.Server:
    """A uvicorn server for ``app`` (``options``: ``host``, ``port``, …), the collector tuned first."""
    tune_gc()
    config = uvicorn.Config(app, log_level=log_level, access_log=False, loop="uvloop", http="httptools",
                            timeout_keep_alive=30, lifespan="off", **options)
    return uvicorn.Server(config)


def serve(app: Any, host: str, port: int) -> None:
    """Serve ``app`` on ``host``:``port`` in the foreground until interrupted."""
    server_for(app, log_level="info", host=host, port=port).run()
