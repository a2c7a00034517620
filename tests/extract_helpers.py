"""Running `hub extract` as a user would, including being killed with SIGKILL part-way."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HUB = str(Path(sys.executable).parent / "hub")


def extract_env(env: dict[str, str], home: Path, **extra: str) -> dict[str, str]:
    """The process environment for `hub extract` against a running sandbox (``env``: its HUB_ vars)."""
    merged = {**os.environ, **env, "HUB_HOME": str(home), **extra}
    merged.pop("HUB_CONFIG", None)
    return merged


def run_extract_cli(system: str, out: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([HUB, "extract", system, "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def extract_killed_then_resumed(system: str, out: Path, env: dict[str, str], seed: int,
                                kill_window_s: tuple[float, float] = (0.5, 3.0)) -> tuple[pa.Table, int]:
    """Start `hub extract`, SIGKILL it at a seeded random instant, re-run to the end with the same state.

    Returns the canonical table and how many times the process was actually killed before finishing.
    """
    rng = random.Random(seed)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen([HUB, "extract", system, "--out", str(out)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + rng.uniform(*kill_window_s)
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        else:
            assert process.returncode == 0, process.stderr.read()
            break
    finished = run_extract_cli(system, out, env)
    assert finished.returncode == 0, finished.stderr
    dataset = next(p for p in out.glob("*.parquet") if p.name != "quarantine.parquet")
    return pq.read_table(dataset), kills
