"""The main job, as far as the hub has been built: the sandbox national systems, served and toured.

It starts the sandbox on loopback, writes its variables for ``hub sandbox env``, calls one operation
of each national system through real clients to show they answer, and keeps serving until
interrupted. Later stages of the hub (the Dagster sync, reconciliation, the lookup API and the
Dagster UI) join this job as they are built.
"""

from __future__ import annotations

import os
import threading
import uuid

import requests
import zeep
from zeep.wsse.username import UsernameToken

from sandbox.app import Sandbox, SandboxConfig, write_runtime_file


def tour(env: dict[str, str]) -> list[tuple[str, str]]:
    """Call each system once; (system, one-line outcome) pairs."""
    outcomes = []
    client = zeep.Client(f"{env['HUB_POPULATION_URL']}/dancu?wsdl",
                         wsse=UsernameToken(env["HUB_POPULATION_USER"], env["HUB_POPULATION_PASSWORD"], use_digest=True))
    page = client.service.DongBoCongDan(MaYeuCau=str(uuid.uuid4()), MaDVC=env["HUB_AGENCY_CODE"],
                                        MaCanBo=env["HUB_OFFICER_ID"], MaTinh=env["HUB_PROVINCE"],
                                        TuThoiDiem="20000101000000", SoLuong=100)
    count = len(page.CongdanCollection.CongDan) if page.CongdanCollection is not None else 0
    outcomes.append(("population", f"first DongBoCongDan page: {count} citizens, data as of {page.ThoiDiemDuLieu}"))
    for system, key in (("civil", "CIVIL"), ("business", "BUSINESS")):
        token = requests.post(f"{env[f'HUB_{key}_URL']}/token", data={"grant_type": "client_credentials"},
                              auth=(env[f"HUB_{key}_CLIENT_ID"], env[f"HUB_{key}_CLIENT_SECRET"]), timeout=30)
        issued = token.ok and "access_token" in token.json()
        outcomes.append((system, f"HTTP {token.status_code}, OAuth2 token issued: {issued}"))
    wsdl = requests.get(f"{env['HUB_VDXP_URL']}/edoc?wsdl", timeout=30)
    outcomes.append(("vdxp", f"HTTP {wsdl.status_code}, WSDL of {len(wsdl.content):,} bytes"))
    return outcomes


def run_demo(home, residents: int, seed: int, port: int, once: bool, echo) -> None:
    from sandbox.server import bind, server_for

    echo(f"generating a province of {residents:,} residents (seed {seed}) ...")
    sandbox = Sandbox(SandboxConfig(residents=residents, seed=seed))
    sock = bind("127.0.0.1", port)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = sandbox.environment(base_url)
    runtime_file = home / "sandbox" / "runtime.json"
    write_runtime_file(runtime_file, env, os.getpid())
    sandbox.truth.write(home / "sandbox" / "truth")
    server = server_for(sandbox.app())
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    try:
        echo(f"sandbox national systems at {base_url}  (variables: eval \"$(hub sandbox env)\")")
        for system, outcome in tour(env):
            echo(f"  {system:<11} {outcome}")
        echo(f"ground truth written to {home / 'sandbox' / 'truth'}")
        if not once:
            echo("serving; press Ctrl-C to stop")
            thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runtime_file.unlink(missing_ok=True)
