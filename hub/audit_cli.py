"""``hub audit``: check the audit log, and list who looked at a person's data and why.

``verify`` is what an inspector or a nightly job runs: it walks the whole chain and every signed
checkpoint and names the first problem precisely (exit 1), or prints one line (exit 0). ``subject``
answers a data subject's right to know who processed their data and for what purpose (Decree 13/2023
Art. 9). Defaults come from the ``HUB_AUDIT_…`` variables (see :class:`hub.audit_log.AuditSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import typer

from hub.audit_log import AuditEntry, AuditLogError, AuditSettings, load_public_key, subject, verify
from hub.config import ConfigError

audit_app = typer.Typer(help="The audit log of lookups: verify its signed chain, list who looked at whose data.",
                        no_args_is_help=True)

DIR_HELP = "Audit-log directory (default: HUB_AUDIT_DIR, else $HUB_HOME/audit)."


def _settings() -> AuditSettings:
    try:
        return AuditSettings.from_env()
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@audit_app.command("verify")
def verify_command(
    directory: Optional[Path] = typer.Option(None, "--dir", file_okay=False, help=DIR_HELP),
    public_key: Optional[Path] = typer.Option(
        None, "--public-key", dir_okay=False,
        help="PEM public key to trust (default: HUB_AUDIT_PUBLIC_KEY, else the .pub.pem beside the signing key). "
             "Pin a copy kept away from the log: a key found beside it proves less."),
) -> None:
    """Check every entry, the hash chain and the signed checkpoints; exit 1 naming the first problem."""
    settings = _settings() if directory is None or public_key is None else None
    directory = directory or settings.directory
    key_path = public_key or settings.public_key_path
    try:
        key = load_public_key(key_path)
    except FileNotFoundError:
        typer.echo(f"no public key at {key_path}; pass --public-key", err=True)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    report = verify(directory, key)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(report.summary())
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("subject")
def subject_command(
    key: str = typer.Argument(..., metavar="ID", help="Personal ID (CCCD) or enterprise code."),
    directory: Optional[Path] = typer.Option(None, "--dir", file_okay=False, help=DIR_HELP),
) -> None:
    """List every request that asked for or returned ID: when, client, agency, purpose, outcome, fields."""
    directory = directory or _settings().directory
    if not directory.is_dir():
        typer.echo(f"no audit log in {directory}", err=True)
        raise typer.Exit(2)
    try:
        entries = subject(directory, key)
    except AuditLogError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if not entries:
        typer.echo(f"no request asked for or returned {key}")
        return
    for line in format_table(entries):
        typer.echo(line)
    typer.echo(f"{len(entries)} request(s) about {key}")


HEADERS = ("when (UTC)", "client", "agency", "purpose", "outcome", "fields", "detail")


def format_table(entries: Sequence[AuditEntry]) -> list[str]:
    """Aligned columns, one row per entry; the last column is left ragged."""
    rows = [HEADERS] + [_row(entry) for entry in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS) - 1)]
    return ["  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip() for row in rows]


def _row(entry: AuditEntry) -> tuple[str, ...]:
    return (entry.at.strftime("%Y-%m-%d %H:%M:%S"), entry.client_id, entry.agency_code, entry.purpose or "(none)",
            str(entry.outcome), ",".join(entry.fields) or "-", entry.detail)
