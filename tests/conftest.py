"""Shared fixtures: a running sandbox on a free loopback port, and clients for its systems."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest

from sandbox.app import Sandbox, SandboxConfig
from sandbox.faults import FaultPlan
from sandbox.server import running


class RunningSandbox:
    def __init__(self, sandbox: Sandbox, base_url: str) -> None:
        self.sandbox = sandbox
        self.base_url = base_url
        self.env = sandbox.environment(base_url)


@contextmanager
def start_sandbox(**config) -> Iterator[RunningSandbox]:
    """Start a sandbox with ``SandboxConfig(**config)`` for the duration of a ``with`` block."""
    sandbox = Sandbox(SandboxConfig(**config))
    with running(sandbox.app()) as base_url:
        yield RunningSandbox(sandbox, base_url)


#: Rare data faults raised so that even a small province shows every kind at least a few times.
RARE_DATA_FAULTS = {"death_not_in_population": 0.3, "marriage_not_in_population": 0.2, "moved_out": 0.02,
                    "document_revoked_after_delivery": 0.2}


@pytest.fixture(scope="session")
def clean_sandbox() -> Iterator[RunningSandbox]:
    """A sandbox of 2,000 residents without transport faults, shared by the contract tests (seed 7)."""
    plan = FaultPlan(data=dict(RARE_DATA_FAULTS))
    with start_sandbox(residents=2_000, seed=7, faults=plan, rate_limit=10_000) as running_sandbox:
        yield running_sandbox


@pytest.fixture
def sandbox_factory():
    """Start sandboxes with custom settings: ``with sandbox_factory(faults=..., rate_limit=5) as sb:``."""
    return start_sandbox
