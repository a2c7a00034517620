"""Shared by the benchmarks: a sandbox served from its own process, so its CPU is not the bench's."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent


def fix_path() -> None:
    """Run as a script, a bench file's folder comes first on sys.path, where `sandbox.py` would shadow
    the `sandbox` package: put the repository root first instead."""
    sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]


def serve(residents: int, **config) -> None:
    """Child process body: a sandbox plus a constant endpoint (PUT a body, POST returns it) for
    baselines, and POST /bench/change?share=S to change that share of every registry now; prints
    {base, env, ks_ids} as one JSON line, then serves until terminated."""
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from sandbox.app import Sandbox, SandboxConfig
    from sandbox.server import bind, server_for

    sandbox = Sandbox(SandboxConfig(residents=residents, seed=1, rate_limit=0, **config))
    app = sandbox.app()
    constant: dict[str, bytes] = {}

    async def constant_body(request):
        name = request.path_params["name"]
        if request.method == "PUT":
            constant[name] = await request.body()
        return Response(constant.get(name, b""), media_type="application/octet-stream")

    async def change(request):
        share = float(request.query_params.get("share", "0.01"))
        return JSONResponse(sandbox.change(share, int(request.query_params.get("seed", "0"))))

    app.router.routes.append(Route("/bench/constant/{name}", constant_body, methods=["PUT", "POST"]))
    app.router.routes.append(Route("/bench/change", change, methods=["POST"]))
    registry = getattr(sandbox.civil, "registry", None)
    ks_ids = sorted(registry.ids("KS"))[:100] if registry is not None else []
    sock = bind()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(json.dumps({"base": base, "env": sandbox.environment(base), "ks_ids": [int(i) for i in ks_ids]}),
          flush=True)
    server_for(app).run(sockets=[sock])


@contextmanager
def serving_child(module: str, function: str, *args: object, stop_timeout_s: float = 60) -> Iterator[dict]:
    """Run ``module.function(*args)`` (a server that prints one JSON line, then serves until terminated)
    in a child process; yields that line, parsed, and terminates the child afterwards."""
    call = f"{function}({', '.join(repr(a) for a in args)})"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from {module} import {function}; {call}"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox process did not start")
        yield json.loads(line)
    finally:
        child.terminate()
        child.wait(timeout=stop_timeout_s)


def sandbox_process(residents: int):
    """Start `serve(residents)` in a child process; yields its {base, env, ks_ids}."""
    return serving_child("bench.common", "serve", residents)
