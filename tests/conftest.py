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


@pytest.fixture(scope="session")
def clean_sandbox() -> Iterator[RunningSandbox]:
    """A fault-free sandbox of 2,000 residents shared by the contract tests (seed 7)."""
    with start_sandbox(residents=2_000, seed=7, faults=FaultPlan.none(), rate_limit=10_000) as running_sandbox:
        yield running_sandbox


@pytest.fixture
def sandbox_factory():
    """Start sandboxes with custom settings: ``with sandbox_factory(faults=..., rate_limit=5) as sb:``."""
    return start_sandbox
