"""Configuration of the hub, read from ``HUB_…`` environment variables.

Every base URL, credential and tuning knob comes from here, never from code. A config file in
dotenv format (``KEY=value`` lines) may set the same variables: ``HUB_CONFIG`` names it, otherwise
``hub.env`` in the working directory is read when present. Variables already set in the
environment win over the file, so an operator can always override one value for one run.

Secrets are wrapped in :class:`Secret`, whose ``repr`` and ``str`` never show the value: a
settings object can be logged or printed without leaking credentials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from dotenv import dotenv_values


class Secret:
    """A credential that prints as ``***``; call :meth:`reveal` where the value is needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _env(environ: Mapping[str, str], name: str, default: str = "") -> str:
    return environ.get(name, default).strip()


def env_number(environ: Mapping[str, str], name: str, default: Any, *, kind: type = float,
               low: float | None = None, high: float | None = None) -> Any:
    """A numeric knob: ``environ[name]`` as ``kind`` (blank or absent: ``default``), within ``low``..``high``
    where given. Anything else, NaN included, is a ConfigError naming the variable and what it must be."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    what = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        what += f" between {low:g} and {high:g}"
    elif low is not None:
        what += f" of at least {low:g}"
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name} must be {what}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The hub's settings. Build with :meth:`from_env`; field docs name the variable."""

    home: Path = Path(".hub")  # HUB_HOME: state directory (lake, Dagster storage, sandbox runtime)
    province: str = "31"  # HUB_PROVINCE: 2-digit province code (MaTinh)
    agency_code: str = ""  # HUB_AGENCY_CODE: requesting agency (MaDVC / maDonVi)
    officer_id: str = ""  # HUB_OFFICER_ID: officer's 12-digit personal ID (MaCanBo)

    population_url: str = ""  # HUB_POPULATION_URL: {base} of the population database
    population_user: str = ""  # HUB_POPULATION_USER
    population_password: Secret = field(default_factory=lambda: Secret(""))  # HUB_POPULATION_PASSWORD

    civil_url: str = ""  # HUB_CIVIL_URL
    civil_client_id: str = ""  # HUB_CIVIL_CLIENT_ID
    civil_client_secret: Secret = field(default_factory=lambda: Secret(""))  # HUB_CIVIL_CLIENT_SECRET

    business_url: str = ""  # HUB_BUSINESS_URL
    business_client_id: str = ""  # HUB_BUSINESS_CLIENT_ID
    business_client_secret: Secret = field(default_factory=lambda: Secret(""))  # HUB_BUSINESS_CLIENT_SECRET
    business_variant: str = "A"  # HUB_BUSINESS_VARIANT: A or B

    vdxp_url: str = ""  # HUB_VDXP_URL
    vdxp_system_id: str = ""  # HUB_VDXP_SYSTEM_ID
    vdxp_secret: Secret = field(default_factory=lambda: Secret(""))  # HUB_VDXP_SECRET

    # HUB_ONESTOP_URLS: the one-stop-shop systems, comma-separated ``name=SQLAlchemy URL`` pairs. The URLs
    # usually hold a password, so each is a Secret; the names are what the lake and reports call them.
    onestop_urls: tuple[tuple[str, Secret], ...] = ()

    dvcqg_url: str = ""  # HUB_DVCQG_URL: {base} of the national public-service portal
    dvcqg_user: str = ""  # HUB_DVCQG_USER
    dvcqg_password: Secret = field(default_factory=lambda: Secret(""))  # HUB_DVCQG_PASSWORD
    dvcqg_dstcode: str = ""  # HUB_DVCQG_DSTCODE: the province's code on the portal (header dstcode)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read settings from ``environ`` (default: the process environment plus the config file)."""
        env = dict(load_config_file(os.environ)) if environ is None else {}
        env.update(os.environ if environ is None else environ)
        secret = lambda name: Secret(_env(env, name))  # noqa: E731 - tiny local helper
        settings = cls(
            home=Path(_env(env, "HUB_HOME", ".hub")),
            province=_env(env, "HUB_PROVINCE", "31"),
            agency_code=_env(env, "HUB_AGENCY_CODE"),
            officer_id=_env(env, "HUB_OFFICER_ID"),
            population_url=_env(env, "HUB_POPULATION_URL").rstrip("/"),
            population_user=_env(env, "HUB_POPULATION_USER"),
            population_password=secret("HUB_POPULATION_PASSWORD"),
            civil_url=_env(env, "HUB_CIVIL_URL").rstrip("/"),
            civil_client_id=_env(env, "HUB_CIVIL_CLIENT_ID"),
            civil_client_secret=secret("HUB_CIVIL_CLIENT_SECRET"),
            business_url=_env(env, "HUB_BUSINESS_URL").rstrip("/"),
            business_client_id=_env(env, "HUB_BUSINESS_CLIENT_ID"),
            business_client_secret=secret("HUB_BUSINESS_CLIENT_SECRET"),
            business_variant=_env(env, "HUB_BUSINESS_VARIANT", "A").upper(),
            vdxp_url=_env(env, "HUB_VDXP_URL").rstrip("/"),
            vdxp_system_id=_env(env, "HUB_VDXP_SYSTEM_ID"),
            vdxp_secret=secret("HUB_VDXP_SECRET"),
            onestop_urls=parse_onestop_urls(_env(env, "HUB_ONESTOP_URLS")),
            dvcqg_url=_env(env, "HUB_DVCQG_URL").rstrip("/"),
            dvcqg_user=_env(env, "HUB_DVCQG_USER"),
            dvcqg_password=secret("HUB_DVCQG_PASSWORD"),
            dvcqg_dstcode=_env(env, "HUB_DVCQG_DSTCODE"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject malformed values early, naming the variable, instead of failing mid-sync."""
        if not (len(self.province) == 2 and self.province.isdigit()):
            raise ConfigError(f"HUB_PROVINCE must be a 2-digit province code, got {self.province!r}")
        if self.officer_id and not (len(self.officer_id) == 12 and self.officer_id.isdigit()):
            raise ConfigError("HUB_OFFICER_ID must be a 12-digit personal ID number")
        if self.business_variant not in ("A", "B"):
            raise ConfigError(f"HUB_BUSINESS_VARIANT must be A or B, got {self.business_variant!r}")
        for name in ("population_url", "civil_url", "business_url", "vdxp_url", "dvcqg_url"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"HUB_{name.upper()} must be an http(s) URL, got {url!r}")

    def describe(self) -> list[tuple[str, str]]:
        """(variable, shown value) pairs for ``hub config``; secrets are shown as set/unset only."""
        rows = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                shown = "(set)" if value else "(unset)"
            elif f.name == "onestop_urls":
                shown = ", ".join(name for name, _ in value) or "(unset)"
            else:
                shown = str(value)
            rows.append((f"HUB_{f.name.upper()}", shown))
        return rows


_SYSTEM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def parse_onestop_urls(text: str) -> tuple[tuple[str, Secret], ...]:
    """``name=URL,name=URL`` → ((name, Secret(URL)), ...). Names are lower-case slugs, unique; a URL may
    itself hold ``=`` (query strings) but not a comma. Errors name the variable and the pair, never the URL."""
    systems: list[tuple[str, Secret]] = []
    for position, pair in enumerate((p.strip() for p in text.split(",")), start=1):
        if not pair:
            continue
        name, sep, url = pair.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or not _SYSTEM_NAME.fullmatch(name):
            raise ConfigError(f"HUB_ONESTOP_URLS pair {position} must be name=URL with a lower-case name "
                              f"(letters, digits, - and _), got name {name!r}")
        if "://" not in url:
            raise ConfigError(f"HUB_ONESTOP_URLS: the URL of {name!r} is not a database URL (dialect://…)")
        if any(existing == name for existing, _ in systems):
            raise ConfigError(f"HUB_ONESTOP_URLS names {name!r} twice")
        systems.append((name, Secret(url)))
    return tuple(systems)


def load_config_file(environ: Mapping[str, str]) -> dict[str, str]:
    """Variables from the config file named by ``HUB_CONFIG`` (or ``./hub.env``), if any."""
    named = environ.get("HUB_CONFIG")
    path = Path(named) if named else Path("hub.env")
    if not path.exists():
        if named:
            raise ConfigError(f"HUB_CONFIG names {path}, which does not exist")
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}
