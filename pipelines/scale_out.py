"""Running the hub's code location beyond one machine: the executor is chosen by the environment.

A run's steps execute where its executor sends them. By default that is one process per step on the
machine running the run (Dagster's ``multi_or_in_process_executor``). With ``HUB_EXECUTOR=celery``
every step becomes a Celery task on a broker, executed by whichever ``dagster-celery`` worker takes
it, so adding workers (on other machines) adds capacity without touching the code.

Settings, all read when the code location loads:

- ``HUB_EXECUTOR``: ``multiprocess`` (the default) or ``celery``;
- ``HUB_CELERY_BROKER``: the broker URL, default RabbitMQ on loopback, ``pyamqp://guest:guest@127.0.0.1:5672//``;
- ``HUB_CELERY_BACKEND``: where workers put step results, default ``rpc://`` (back over the broker);
- ``HUB_CELERY_QUEUE``: the queue steps are sent to, default ``dagster``; workers listen with ``-q``.

Celery only moves steps: the workers need the same Dagster instance (PostgreSQL storage, see
``deploy/dagster-postgres.yaml``), the same ``HUB_…`` settings and the same lake (``HUB_HOME`` on storage
every worker mounts), because a step reads what the previous one wrote there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

EXECUTOR_VAR = "HUB_EXECUTOR"
DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "rpc://"
DEFAULT_QUEUE = "dagster"
EXECUTORS = ("multiprocess", "celery")

def celery_settings(environ: Mapping[str, str]) -> dict:
    """The celery executor's config from ``HUB_CELERY_…``; the queue goes into ``task_default_queue``
    because that is where ``dagster-celery`` sends a step that carries no queue tag of its own."""
    return {
        "broker": environ.get("HUB_CELERY_BROKER") or DEFAULT_BROKER,
        "backend": environ.get("HUB_CELERY_BACKEND") or DEFAULT_BACKEND,
        "config_source": {"task_default_queue": environ.get("HUB_CELERY_QUEUE") or DEFAULT_QUEUE},
    }


def executor_from_env(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor ``HUB_EXECUTOR`` names, so a deployment opts in to Celery by configuration alone.

    ``dagster_celery`` is imported only when asked for: a code location that never uses Celery does
    not pay for importing it, nor needs a broker."""
    environ = os.environ if environ is None else environ
    kind = (environ.get(EXECUTOR_VAR) or "multiprocess").strip().lower()
    if kind == "multiprocess":
        return dg.multi_or_in_process_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_settings(environ), name="celery")
    raise ValueError(f"{EXECUTOR_VAR}={kind!r}: expected one of {', '.join(EXECUTORS)}")
