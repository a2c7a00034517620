"""``hub docaxis``: the province's document axis from the command line.

``receive`` runs the ``docaxis_exchange`` job once on the hub's Dagster instance (so it shows in the
UI and shares its pools with the sensor's runs); ``send`` sends the outbox and follows sent
documents without landing anything; ``status``, ``overdue``, ``quarantine`` and ``outbox`` show
what the store holds; ``clean`` removes files no row refers to; ``serve`` runs the API for local
document-management systems and ``add-client`` registers one of them.
"""

from __future__ import annotations

import os
from typing import Optional

import typer

from hub.config import ConfigError

docaxis_app = typer.Typer(help="The province's document axis: receive, deliver to local systems, send, oversee.",
                          no_args_is_help=True)


def _settings():
    from hub.docaxis.settings import DocaxisSettings

    try:
        return DocaxisSettings.from_env()
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _store():
    from hub.docaxis.store import DocumentStore

    return DocumentStore.open(_settings())


@docaxis_app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", help="Address to bind; loopback only by default."),
          port: int = typer.Option(8900, min=1, max=65535)) -> None:
    """Serve the API for local document-management systems (OpenAPI at /openapi.json, docs at /docs)."""
    from hub.docaxis.api import serve as run

    _settings()
    run(host, port)


@docaxis_app.command("add-client")
def add_client(
    client_id: str = typer.Argument(..., help="Lower-case letters, digits and '-'."),
    agency: str = typer.Option(..., help="The one agency the system acts for (either code form)."),
    rate: float = typer.Option(20.0, help="Requests per second (0: unlimited)."),
    name: str = typer.Option("", help="A name for people."),
    replace: bool = typer.Option(False, help="Issue a new key for an existing client."),
) -> None:
    """Register a local document-management system and print its key, once (the file keeps a hash)."""
    from hub.access_policy import PolicyFileError, register_client

    settings = _settings()
    store = _store()
    if store.resolve(agency) is None:
        typer.echo(f"cannot register {client_id}: {agency} is not one of the province's agencies "
                   f"(under {settings.agency_root}, HUB_DOCAXIS_AGENCY_ROOT)", err=True)
        raise typer.Exit(2)
    try:
        key = register_client(settings.clients, client_id, agency, {}, [], rate=rate, name=name, replace=replace)
    except PolicyFileError as exc:
        typer.echo(f"cannot register {client_id}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(key)


@docaxis_app.command("receive")
def receive() -> None:
    """Receive from the axis, take into the store, send the outbox: one docaxis_exchange run."""
    import dagster as dg

    from hub.config import Settings
    from hub.orchestration import PROCESS_TAG, close_abandoned_runs, dagster_home, this_process
    from pipelines.definitions import defs

    home = dagster_home(Settings.from_env().home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        close_abandoned_runs(instance)
        result = defs.resolve_job_def("docaxis_exchange").execute_in_process(
            instance=instance, raise_on_error=False, tags={PROCESS_TAG: this_process() or ""})
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        rows = materialization.metadata.get("rows")
        typer.echo(f"  {materialization.asset_key.to_user_string():<20} "
                   f"{f'{rows.value:,} new' if rows is not None else 'done'}")
    for evaluation in result.get_asset_check_evaluations():
        count = evaluation.metadata.get("overdue")
        typer.echo(f"  check {evaluation.asset_check_key.name}: {'passed' if evaluation.passed else 'WARN'}"
                   + (f" ({count.value} overdue)" if count is not None else ""))
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                typer.echo(f"  step FAILED: {event.step_key}: {event.event_specific_data.error.message.strip()}")
        raise typer.Exit(1)


@docaxis_app.command("send")
def send() -> None:
    """Send the outbox and follow sent documents (nothing is received)."""
    from connectors.registry import build_connector
    from hub.config import Settings
    from hub.docaxis.sender import send_outbox, track_sent
    from hub.docaxis.signing import load_signer

    settings = _settings()
    try:
        connector = build_connector("vdxp", Settings.from_env(), os.environ)
    except (ValueError, ConfigError) as exc:
        typer.echo(f"the axis is not configured: {exc}", err=True)
        raise typer.Exit(2) from None
    store = _store()
    sent = send_outbox(store, connector, load_signer(settings))
    tracked = track_sent(store, connector)
    typer.echo(f"sent {sent.sent}, refused {sent.refused}, unknown {sent.unknown}, left for later {sent.retry_later}; "
               f"followed {tracked.documents} sent documents, {tracked.settled} recipients settled")
    if sent.errors:
        typer.echo(f"the axis: {sent.errors[0]}", err=True)
        raise typer.Exit(1)


@docaxis_app.command("status")
def status() -> None:
    """What the store holds, the outbox, and per agency: received, sent, refused, overdue."""
    store = _store()
    typer.echo("  ".join(f"{k}={v}" for k, v in store.counts().items()))
    typer.echo("outbox: " + ("  ".join(f"{k}={v}" for k, v in store.outbox_summary().items()) or "empty"))
    volumes = store.volumes()
    metrics = ("received", "sent", "refused", "sent_refused", "overdue", "sent_overdue")
    typer.echo(f"{'agency':<16}" + "".join(f"{m:>14}" for m in metrics))
    for agency, numbers in volumes.items():
        typer.echo(f"{agency:<16}" + "".join(f"{numbers[m]:>14}" for m in metrics))


@docaxis_app.command("overdue")
def overdue(agency: Optional[str] = typer.Option(None, help="Only this agency.")) -> None:
    """Documents past their due date without status 06 (nor 02)."""
    store = _store()
    code = store.resolve(agency) if agency else None
    if agency and code is None:
        typer.echo(f"{agency} is not one of the province's agencies", err=True)
        raise typer.Exit(2)
    items = store.overdue(None, code)
    for i in items:
        typer.echo(f"{i['due_date']}  {i['direction']:<8}  {i['agency']:<14} owed by {i['owed_by']:<16} "
                   f"{i['document_id']}  {(i['subject'] or '')[:60]}")
    typer.echo(f"{len(items)} overdue as of {store.today().isoformat()}")


@docaxis_app.command("quarantine")
def quarantine() -> None:
    """Packages the axis delivered that were refused, with the reason (each was settled 'fail')."""
    items = _store().quarantined()
    for q in items:
        typer.echo(f"{q['recorded_at']}  {q['doc_id']}  {q['position']}: {q['reason']}")
    typer.echo(f"{len(items)} quarantined")


@docaxis_app.command("outbox")
def outbox(retry: Optional[int] = typer.Option(None, help="Send this unknown or refused entry again (it may arrive "
                                                          "twice if it did reach the axis).")) -> None:
    """Outbox entries not sent yet, refused, or of unknown outcome."""
    from hub.docaxis.store import StoreError

    store = _store()
    if retry is not None:
        try:
            store.retry_unknown(retry)
        except StoreError as exc:
            typer.echo(exc.message, err=True)
            raise typer.Exit(1) from None
        typer.echo(f"entry {retry} is pending again")
        return
    for e in store.outbox_entries():
        typer.echo(f"{e['id']:>6}  {e['kind']:<6} {e['state']:<8} from {e['from_organ_id']} to {e['to_organ_ids']}  "
                   f"attempts {e['attempts']}  {e['last_error'] or ''}")


@docaxis_app.command("clean")
def clean(older_than_hours: float = typer.Option(24.0, help="Only files written (or reused) at least this long ago; "
                                                            "1 at the least."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go, remove nothing.")) -> None:
    """Remove the store's files no row refers to (left by a change that failed after writing them)."""
    from datetime import timedelta

    from hub.docaxis.store import MIN_ORPHAN_GRACE

    grace = timedelta(hours=older_than_hours)
    if grace < MIN_ORPHAN_GRACE:
        typer.echo(f"--older-than-hours must be at least {MIN_ORPHAN_GRACE.total_seconds() / 3600:g}: a change in "
                   f"progress may have written its files and not committed yet", err=True)
        raise typer.Exit(2)
    report = _store().remove_orphan_files(grace, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {report.removed} files no row refers to ({report.bytes:,} bytes) and "
               f"{report.temporaries if not dry_run else 0} temporary files; {report.kept} old files are in use")
