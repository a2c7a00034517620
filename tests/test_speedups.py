"""The compiled hot modules (hub/speedups.py): built by the README's setup, refused when stale."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub import speedups

ROOT = Path(__file__).resolve().parent.parent


def test_setup_built_every_hot_module_and_import_finds_the_compiled_one() -> None:
    """``make setup`` compiles them; a missing compiler or a failed build would show here, not as a
    slower benchmark."""
    for name in speedups.MODULES:
        module = importlib.import_module(f"hub.{name}")
        assert module.__file__.endswith(speedups._SUFFIX), f"hub.{name} runs from {module.__file__}"
    speedups.check_fresh()  # and they were built from these very sources


def _package(tmp_path: Path, sources: dict[str, str]) -> Path:
    for name, text in sources.items():
        (tmp_path / f"{name}.py").write_text(text)
        (tmp_path / f"{name}{speedups._SUFFIX}").write_bytes(b"not really a module")
    return tmp_path


def test_a_build_whose_source_changed_is_refused_with_the_way_out(tmp_path: Path) -> None:
    package = _package(tmp_path, {"lookup_api": "x = 1\n", "audit_log": "y = 2\n"})
    manifest = {name: speedups._digest(package, name) for name in ("lookup_api", "audit_log")}
    (package / speedups.MANIFEST.name).write_text(json.dumps(manifest))
    speedups.check_fresh(package)  # as built

    (package / "lookup_api.py").write_text("x = 2\n")
    with pytest.raises(speedups.StaleBuild) as refused:
        speedups.check_fresh(package)
    message = str(refused.value)
    assert "lookup_api" in message and "audit_log" not in message
    assert "speedups.py build" in message and "speedups.py clean" in message


def test_a_build_without_its_record_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, {"identity_match": "z = 3\n"})
    with pytest.raises(speedups.StaleBuild, match="identity_match"):
        speedups.check_fresh(package)
    (package / speedups.MANIFEST.name).write_text("{half a record")
    with pytest.raises(speedups.StaleBuild, match="identity_match"):
        speedups.check_fresh(package)


def test_nothing_compiled_nothing_to_check(tmp_path: Path) -> None:
    (tmp_path / "lookup_api.py").write_text("x = 1\n")
    speedups.check_fresh(tmp_path)
    assert speedups.built(tmp_path) == []


def test_the_tool_refuses_an_unknown_command() -> None:
    done = subprocess.run([sys.executable, "-P", str(ROOT / "hub" / "speedups.py"), "frobnicate"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "ensure|build|clean" in done.stderr
