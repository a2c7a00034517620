"""The ``hub`` command line.

``hub sandbox serve`` runs the national-systems sandbox; ``hub sandbox env`` prints the variables
that point the hub at it; ``hub sandbox truth`` writes the ground truth of a generated province;
``hub config`` shows the effective configuration (secrets masked); ``hub demo`` is the main job;
``hub export`` keeps a dataset in a local agency's database (see :mod:`hub.export`).
"""

from __future__ import annotations

import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from hub.audit_cli import audit_app
from hub.docaxis.cli import docaxis_app
from hub.config import ConfigError, Settings

app = typer.Typer(help="LGSP Hub: a provincial data-integration hub.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
sandbox_app = typer.Typer(help="The national-systems sandbox (population, civil status, business, document axis).",
                          no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(audit_app, name="audit")
app.add_typer(docaxis_app, name="docaxis")
api_app = typer.Typer(help="The lookup service for local agencies: serve it, register its clients.", no_args_is_help=True)
app.add_typer(api_app, name="api")
report_app = typer.Typer(help="Reports the hub makes to national systems.", no_args_is_help=True)
app.add_typer(report_app, name="report")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> None:
    """SIGTERM (``timeout``, a service manager) stops a long-running command the way Ctrl-C does, so
    the processes it started (the UI, the lookup API) are stopped with it rather than orphaned."""
    signal.signal(signal.SIGTERM, _interrupt)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _runtime_file(settings: Settings) -> Path:
    return settings.home / "sandbox" / "runtime.json"


def _sandbox_config(residents: int, seed: int, faults: Optional[Path], rate_limit: float, token_lifetime: float,
                    as_of: Optional[str]):
    from sandbox.app import SandboxConfig
    from sandbox.faults import FaultConfigError, FaultPlan
    from sandbox.province import DEFAULT_AS_OF
    from schemas.timefmt import VN_TZ

    try:
        plan = FaultPlan.load(faults) if faults else FaultPlan(seed=seed)
    except FaultConfigError as exc:
        typer.echo(f"fault file error: {exc}", err=True)
        raise typer.Exit(2) from None
    moment = DEFAULT_AS_OF
    if as_of:
        try:
            moment = datetime.strptime(as_of, "%Y-%m-%d").replace(tzinfo=VN_TZ)
        except ValueError:
            typer.echo(f"--as-of must be a date YYYY-MM-DD, got {as_of!r}", err=True)
            raise typer.Exit(2) from None
    return SandboxConfig(residents=residents, seed=seed, faults=plan, rate_limit=rate_limit,
                         token_lifetime_s=token_lifetime, as_of=moment)


ONESTOP_HELP = ("A one-stop-shop system as NAME=URL (repeatable; replaces the default three), e.g. "
                "so-y-te=postgresql://postgres@127.0.0.1:5432/lgsp_onestop_so_y_te or quan-le-chan=sqlite:///x.sqlite.")


def _onestop_config(systems: Optional[list[str]], sqlite_only: bool, dossiers: int, months: int, interval: float,
                    home: Path):
    """The ``--onestop…`` options as the sandbox's one-stop-shop configuration; exit 2 naming a bad one."""
    from sandbox.onestop import OneStopConfig, OneStopError, parse_system

    try:
        pairs = tuple(parse_system(text) for text in systems) if systems else None
        return OneStopConfig(systems=pairs, sqlite_only=sqlite_only, directory=home / "sandbox" / "onestop",
                             dossiers_per_month=dossiers, months=months, change_interval_s=interval)
    except OneStopError as exc:
        typer.echo(f"--onestop: {exc}", err=True)
        raise typer.Exit(2) from None


@sandbox_app.command("serve")
def sandbox_serve(
    residents: int = typer.Option(10_000, min=1_000, max=1_000_000, help="Residents of the synthetic province."),
    seed: int = typer.Option(0, help="Seed of the generated data (and of the faults unless the fault file sets one)."),
    faults: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="TOML file of fault rates."),
    port: int = typer.Option(8700, min=0, max=65535, help="Loopback port (0: any free port)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback only by default."),
    rate_limit: float = typer.Option(50.0, help="Requests per second per client, each system."),
    token_lifetime: float = typer.Option(300.0, help="Lifetime of OAuth2 tokens, seconds."),
    as_of: Optional[str] = typer.Option(None, help="End of generated history, YYYY-MM-DD (default 2026-11-01)."),
    truth: Optional[Path] = typer.Option(None, file_okay=False, help="Write the ground truth here (Parquet)."),
    onestop: Optional[list[str]] = typer.Option(None, "--onestop", help=ONESTOP_HELP),
    onestop_sqlite_only: bool = typer.Option(False, "--onestop-sqlite-only",
                                             help="Serve only the one-stop-shop systems on SQLite."),
    onestop_dossiers: int = typer.Option(10_000, min=0, help="One-stop-shop dossiers a month, all systems together."),
    onestop_months: int = typer.Option(3, min=0, max=120, help="Months of one-stop-shop history before --as-of."),
    onestop_interval: float = typer.Option(5.0, min=0, help="Seconds between one-stop-shop changes (0: none)."),
) -> None:
    """Serve the national systems over HTTP and print their base URLs and credentials."""
    from dataclasses import replace

    from sandbox.app import Sandbox, write_runtime_file
    from sandbox.server import bind, server_for

    settings = _settings()
    config = _sandbox_config(residents, seed, faults, rate_limit, token_lifetime, as_of)
    config = replace(config, onestop=_onestop_config(onestop, onestop_sqlite_only, onestop_dossiers, onestop_months,
                                                     onestop_interval, settings.home))
    typer.echo(f"generating a province of {residents:,} residents (seed {seed}) ...", err=True)
    sandbox = Sandbox(config)
    typer.echo("filling the one-stop-shop databases ...", err=True)
    sandbox.onestop.open()
    truth_dir = truth or settings.home / "sandbox" / "truth"
    sandbox.truth.write(truth_dir)
    try:
        sock = bind(host, port)
    except OSError as exc:
        typer.echo(f"cannot listen on {host}:{port}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    shown_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{shown_host}:{sock.getsockname()[1]}"
    environment = sandbox.environment(base_url)
    runtime_file = _runtime_file(settings)
    write_runtime_file(runtime_file, environment, os.getpid())
    typer.echo(f"ground truth: {truth_dir}", err=True)
    from sandbox.faults import SYSTEMS

    for system in SYSTEMS:
        keys = [k for k in environment if k.startswith(f"HUB_{system.upper()}_")]
        typer.echo(f"{system:<11} " + "  ".join(f"{k.split('_', 2)[2].lower()}={environment[k]}" for k in keys))
    for system in sandbox.onestop.served():  # the password of each URL only in the runtime file
        typer.echo(f"{'onestop':<11} {system.name}  agency={system.agency.code102}  dossiers={len(system.dossiers):,}  "
                   f"url={system.shown_url}")
    typer.echo(f"agency={environment['HUB_AGENCY_CODE']}  officer={environment['HUB_OFFICER_ID']}  "
               f"province={environment['HUB_PROVINCE']}")
    typer.echo(f'point the hub at it with:  eval "$(hub sandbox env)"   (written to {runtime_file})')
    server = server_for(sandbox.app(), log_level="warning")
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    sandbox.onestop.start()
    try:
        server.run(sockets=[sock])
    finally:
        sandbox.onestop.close()
        runtime_file.unlink(missing_ok=True)


@sandbox_app.command("env")
def sandbox_env() -> None:
    """Print ``export HUB_…=…`` lines for the running sandbox (use with ``eval``)."""
    from sandbox.app import read_runtime_file

    settings = _settings()
    try:
        environment = read_runtime_file(_runtime_file(settings))
    except FileNotFoundError as exc:
        detail = str(exc) if "no longer running" in str(exc) else "no sandbox is running"
        typer.echo(f"{detail}; start one with `hub sandbox serve`", err=True)
        raise typer.Exit(1) from None
    for key, value in environment.items():
        typer.echo(f"export {key}={_shell_quote(value)}")


@sandbox_app.command("truth")
def sandbox_truth(
    out: Path = typer.Option(..., file_okay=False, help="Directory for the Parquet tables."),
    residents: int = typer.Option(10_000, min=1_000, max=1_000_000),
    seed: int = typer.Option(0),
    faults: Optional[Path] = typer.Option(None, exists=True, dir_okay=False),
    onestop: Optional[list[str]] = typer.Option(None, "--onestop", help=ONESTOP_HELP),
    onestop_sqlite_only: bool = typer.Option(False, "--onestop-sqlite-only"),
    onestop_dossiers: int = typer.Option(10_000, min=0),
    onestop_months: int = typer.Option(3, min=0, max=120),
) -> None:
    """Generate a province and write its ground truth without serving it."""
    from dataclasses import replace

    from sandbox.app import Sandbox

    config = _sandbox_config(residents, seed, faults, 50.0, 300.0, None)
    config = replace(config, onestop=_onestop_config(onestop, onestop_sqlite_only, onestop_dossiers, onestop_months,
                                                     0.0, _settings().home))
    sandbox = Sandbox(config)
    sandbox.onestop.generate()  # the one-stop-shop tables of the ground truth
    for path in sandbox.truth.write(out):
        typer.echo(str(path))


@app.command("config")
def show_config() -> None:
    """Show the effective configuration; secrets appear only as set or unset."""
    for name, value in _settings().describe():
        typer.echo(f"{name}={value}")


def _shell_quote(value: str) -> str:
    safe = all(ch.isalnum() or ch in "-_./:@%+=," for ch in value)
    return value if safe and value else "'" + value.replace("'", "'\"'\"'") + "'"


@app.command("demo")
def demo(
    residents: int = typer.Option(10_000, min=1_000, max=1_000_000),
    seed: int = typer.Option(0),
    port: int = typer.Option(8700, min=0, max=65535, help="Port of the sandbox national systems."),
    ui_port: int = typer.Option(3000, min=1, max=65535, help="Port of the Dagster UI."),
    api_port: int = typer.Option(8800, min=1, max=65535, help="Port of the lookup API."),
    rate_limit: float = typer.Option(50.0, help="Requests/s each sandbox system allows, and the hub keeps to."),
    once: bool = typer.Option(False, help="Exit after the sync instead of starting the UI and serving."),
) -> None:
    """The main job: the sandbox national systems, a full sync through Dagster, and the Dagster UI."""
    from hub.demo import run_demo

    _stop_on_sigterm()
    if not run_demo(_settings().home, residents, seed, port, ui_port, api_port, rate_limit, once, typer.echo):
        raise typer.Exit(1)


SYSTEMS_HELP = "population, civil, business, vdxp or onestop"


@app.command("check")
def check(system: str = typer.Argument(..., help=SYSTEMS_HELP)) -> None:
    """Tell in one line whether SYSTEM is reachable and the credentials work, and if not, why."""
    from connectors.errors import ConnectorError
    from connectors.registry import build_connector

    try:
        result = build_connector(system, _settings()).check()
    except (ValueError, ConnectorError) as exc:
        typer.echo(f"{system}: FAILED - {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"{system}: {'OK' if result.ok else 'FAILED'} - {result.message}")
    raise typer.Exit(0 if result.ok else 1)


@app.command("extract")
def extract(
    system: str = typer.Argument(..., help=SYSTEMS_HELP),
    out: Path = typer.Option(..., file_okay=False, help="Directory for the canonical Parquet files."),
    state: Optional[Path] = typer.Option(None, dir_okay=False, help="State file (default OUT/state.json)."),
) -> None:
    """Extract SYSTEM into canonical Parquet under OUT; with the same state, only what changed."""
    from connectors.errors import ConnectorError
    from connectors.extract import StateError, run_extract, terminal_progress
    from connectors.registry import build_connector

    try:
        connector = build_connector(system, _settings())
    except ValueError as exc:
        typer.echo(f"{system}: {exc}", err=True)
        raise typer.Exit(2) from None
    advance, close = terminal_progress(None, f"{system} → {out}")
    try:
        result = run_extract(connector, out, state, advance)
    except (ConnectorError, StateError) as exc:
        typer.echo(f"extract failed: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        close()
    typer.echo(f"{system}: {result.fetched:,} rows fetched in {result.batches:,} batches, "
               f"{result.quarantined:,} quarantined; {result.rows:,} rows in {result.dataset_path}")


@app.command("export")
def export(
    dataset: str = typer.Argument(..., help="citizens, civil_events, enterprises or documents"),
    to: str = typer.Option(..., "--to", envvar="HUB_EXPORT_URL", show_envvar=True,
                           help="Target database URL (postgresql://…, mariadb://…, sqlite:///…); its password is never shown."),
    table: Optional[str] = typer.Option(None, help="Target table (default: the dataset's name)."),
    schema: Optional[str] = typer.Option(None, help="Target schema (PostgreSQL) or database (MariaDB); default the URL's."),
    full: bool = typer.Option(False, help="Re-sync in full: rewrite every row, delete every key the dataset lacks."),
    dry_run: bool = typer.Option(False, help="Count what would change; write nothing."),
    batch_size: int = typer.Option(5_000, min=1, max=100_000, help="Rows per batch."),
    snapshot: Optional[Path] = typer.Option(None, dir_okay=False,
                                            help="Snapshot to read (default $HUB_HOME/lake/published/current.duckdb)."),
    client: Optional[str] = typer.Option(None, help="Export only the key and the fields this registered client "
                                                    "(hub api add-client) is granted."),
) -> None:
    """Write DATASET of the published snapshot into a local agency's database; later runs send only the changes."""
    from hub.access_policy import clients_path
    from hub.export import ExportError, export_dataset

    home = _settings().home
    path = snapshot or home / "lake" / "published" / "current.duckdb"
    try:
        result = export_dataset(dataset, to, snapshot=path, table=table, schema=schema, full=full, dry_run=dry_run,
                                batch_rows=batch_size, client=client, clients_file=clients_path(os.environ, home))
    except ExportError as exc:
        typer.echo(f"export failed: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    typer.echo(result.summary())


@report_app.command("portal")
def report_portal(
    state: Optional[Path] = typer.Option(None, dir_okay=False,
                                         help="Reporting state (default $HUB_HOME/portal/state.sqlite, shared with "
                                              "the Dagster asset portal/report)."),
    lake: bool = typer.Option(False, "--lake", help="Report the lake's canonical dossiers (what the asset reads) "
                                                    "instead of reading the one-stop-shop systems now."),
    refused: bool = typer.Option(False, "--refused", help="List what the portal refused and what was deleted at the "
                                                          "source after it was reported; send nothing."),
) -> None:
    """One reporting pass to the national portal: every dossier and progress step not yet there, once."""
    from connectors.errors import ConnectorError
    from connectors.portal import PortalClient
    from hub.portal_report import ReportError, orphans, refusals, report_pass

    settings = _settings()
    path = state or settings.home / "portal" / "state.sqlite"
    if refused:
        for item in refusals(path):
            step = f" step {item['ThoiDiemXuLy']}" if "ThoiDiemXuLy" in item else ""
            typer.echo(f"refused  {item['MaHoSo']}{step}: error_code {item['error_code']}: {item['message']}")
        for code in orphans(path):
            typer.echo(f"deleted at the source, still on the portal: {code}")
        return
    try:
        client = PortalClient.from_settings(settings, os.environ)
        rows, left_out = _lake_dossiers(settings, path) if lake else (_source_dossiers(settings), 0)
        result = report_pass(rows, client, path, left_out=left_out)
    except (ConfigError, ConnectorError, ReportError) as exc:
        typer.echo(f"report failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(result.summary())
    if result.refusals:
        typer.echo(f"{len(result.refusals)} refused: see `hub report portal --refused`", err=True)


def _source_dossiers(settings: Settings) -> list[dict]:
    """Every dossier the one-stop-shop systems hold now, read through their connector."""
    from connectors.registry import build_connector

    connector = build_connector("onestop", settings)
    return [row for batch in connector.read(None) for row in batch.records.to_pylist()]


def _lake_dossiers(settings: Settings, state: Path) -> tuple[list[dict], int]:
    """The lake's canonical dossiers the asset would report, as it reads them."""
    from hub.portal_report import rows_to_report
    from pipelines.lake import HubLake

    return rows_to_report(HubLake(home=str(settings.home)).table("dossiers").relation(), state)


@app.command("sync")
def sync() -> None:
    """Run the full sync (every source, canonical tables, checks, published snapshot) through Dagster."""
    from hub.demo import report
    from hub.orchestration import run_full_sync

    if not report(run_full_sync(_settings().home), typer.echo):
        raise typer.Exit(1)


@app.command("ui")
def ui(port: int = typer.Option(3000, min=1, max=65535)) -> None:
    """Start the Dagster UI and daemon on the hub's instance (DAGSTER_HOME is set for you)."""
    from hub.orchestration import start_ui, stop_process_group, ui_log

    home = _settings().home
    _stop_on_sigterm()
    process = start_ui(home, port)
    typer.echo(f"Dagster UI at http://127.0.0.1:{port} (Ctrl-C to stop; log: {ui_log(home)})")
    try:
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        stop_process_group(process)


@api_app.command("serve")
def api_serve(host: str = typer.Option("127.0.0.1", help="Address to bind; loopback only by default."),
              port: int = typer.Option(8800, min=1, max=65535)) -> None:
    """Serve the lookup API from $HUB_HOME/lake/published/current.duckdb (one uvicorn worker)."""
    from hub.lookup_api import serve

    serve(_settings(), host, port)


@api_app.command("add-client")
def api_add_client(
    client_id: str = typer.Argument(..., help="Lower-case letters, digits and '-'."),
    agency: str = typer.Option(..., help="The client's agency code (MaDVC)."),
    grant: list[str] = typer.Option(..., help="DATASET=FIELD[,FIELD...]; * is every non-sensitive field. Repeat."),
    purpose: list[str] = typer.Option([], help="Allowed purpose pattern (procedure or dossier code, * ?). Repeat."),
    feed: list[str] = typer.Option([], help="Dataset whose change feed the client may read. Repeat."),
    rate: float = typer.Option(20.0, help="Requests per second (0: unlimited)."),
    burst: Optional[float] = typer.Option(None, help="Token-bucket burst (default: the rate)."),
    name: str = typer.Option("", help="A name for people."),
    replace: bool = typer.Option(False, help="Issue a new key and grants for an existing client."),
) -> None:
    """Register a client of the lookup API and print its key, once: the clients file keeps only its hash."""
    from hub.access_policy import PolicyFileError, clients_path, parse_grants, register_client

    settings = _settings()
    try:
        key = register_client(clients_path(os.environ, settings.home), client_id, agency, parse_grants(grant),
                              purpose, rate=rate, burst=burst, name=name, replace=replace, feeds=feed)
    except PolicyFileError as exc:
        typer.echo(f"cannot register {client_id}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(key)
