"""The lookup service's hot modules compiled to C by Cython: the same source, without the bytecode loop.

A citizen lookup's own work (:mod:`hub.lookup_api`'s direct path, the serving store, the 037 check,
the access policy's cached checks, and the audit log's queue and writer) is ordinary Python, and
its cost is the interpreter's: no single step stands out, and the steps add up to more than the
framework around them. Cython compiles those modules as they are (plain Python objects
throughout, annotations not taken as C types, so the semantics are Python's), and the compiled
module is what ``import`` finds first. The ``.py`` files stay the source and the fallback: where
nothing was built, or after ``clean``, they run as they are.

A compiled module that no longer matches its source would run old code, so :func:`build` records
each source's SHA-256 in ``hub/.compiled.json`` and importing :mod:`hub` refuses a stale build
(:func:`check_fresh`) with a message that says how to rebuild.

``python -P hub/speedups.py ensure``  compile in place unless a fresh build is there (``make setup``
runs it; it needs a C compiler). Run as a file, since importing :mod:`hub` refuses a stale build.
``python -P hub/speedups.py build``   compile in place
``python -P hub/speedups.py clean``   remove what was built
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

HUB = Path(__file__).resolve().parent
#: The modules compiled, relative to the package (the per-request path of ``GET /v1/citizens/{id}``).
MODULES = ("access_policy", "audit_log", "audit_writer", "identity_match", "lookup_api", "serving_store")
MANIFEST = HUB / ".compiled.json"
_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


class StaleBuild(ImportError):
    """A compiled module was built from another version of its source."""


def _digest(directory: Path, name: str) -> str:
    return hashlib.sha256((directory / f"{name}.py").read_bytes()).hexdigest()


def built(directory: Path = HUB) -> list[Path]:
    """The compiled modules present in ``directory`` (the package)."""
    return [path for name in MODULES if (path := directory / f"{name}{_SUFFIX}").exists()]


def check_fresh(directory: Path = HUB) -> None:
    """Raise :class:`StaleBuild` when a compiled module's source changed after it was built (or no
    record says what it was built from). Nothing to check when nothing is compiled."""
    present = built(directory)
    if not present:
        return
    try:
        recorded = json.loads((directory / MANIFEST.name).read_text())
    except (OSError, ValueError):
        recorded = {}
    stale = [path.name for path in present if recorded.get(name := _name(path)) != _digest(directory, name)]
    if stale:
        raise StaleBuild(f"compiled module(s) {', '.join(stale)} in {directory} were built from another version "
                         "of their source; rebuild them (make setup, or python -P hub/speedups.py build) or remove "
                         "them (python -P hub/speedups.py clean)")


def _name(path: Path) -> str:
    return path.name.split(".", 1)[0]


def clean() -> None:
    for path in [*built(), MANIFEST, *(HUB / f"{name}.c" for name in MODULES)]:
        path.unlink(missing_ok=True)


def build() -> None:
    """Compile :data:`MODULES` in place, then record their sources' digests."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    clean()
    root = HUB.parent
    extensions = [Extension(f"hub.{name}", [str(HUB / f"{name}.py")]) for name in MODULES]
    modules = cythonize(extensions, quiet=True, language_level=3, nthreads=os.cpu_count() or 1,
                        compiler_directives={"annotation_typing": False, "binding": True})
    distribution = Distribution({"name": "hub-speedups", "ext_modules": modules})
    command = distribution.get_command_obj("build_ext")
    command.inplace, command.parallel = True, os.cpu_count() or 1
    command.build_temp = str(root / "build" / "speedups")
    distribution.run_command("build_ext")
    for name in MODULES:
        (HUB / f"{name}.c").unlink(missing_ok=True)
    MANIFEST.write_text(json.dumps({name: _digest(HUB, name) for name in MODULES}, indent=1) + "\n")


def _complete_and_fresh() -> bool:
    """Every module of :data:`MODULES` compiled, from its present source."""
    try:
        check_fresh()
    except StaleBuild:
        return False
    return len(built()) == len(MODULES)


def main(argv: list[str]) -> int:
    if argv == ["ensure"] and _complete_and_fresh():
        return 0
    if argv in (["ensure"], ["build"]):
        build()
        print(f"compiled {len(built())} modules in {HUB}")
        return 0
    if argv == ["clean"]:
        clean()
        return 0
    sys.stderr.write("usage: python -P hub/speedups.py ensure|build|clean\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
