"""The document axis in the Dagster code location: what each job holds, when the sensor launches
runs and why, and the overdue check on its own."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dagster as dg

import pipelines.documents
from pipelines.definitions import defs
from pipelines.documents import OVERDUE, PEEK_MARGIN_S, STORE, docaxis_inbox, inbox_reasons
from pipelines.lake import HubLake
from sandbox.document_exchange import Message
from tests.docaxis_helpers import hub_env, run_job, settled, store_of, use_env


def _check_keys(job: dg.JobDefinition) -> set[str]:
    return {f"{k.asset_key.to_user_string()}:{k.name}" for k in job.asset_layer.asset_graph.asset_check_keys}


def test_the_jobs_hold_what_they_say() -> None:
    graph = defs.resolve_asset_graph()
    for key in (STORE, OVERDUE):
        node = graph.get(key)
        assert node.description and node.owners and node.kinds, key
    exchange = defs.resolve_job_def("docaxis_exchange")
    assert {k.to_user_string() for k in exchange.asset_layer.selected_asset_keys} == {
        "landing/vdxp", "canonical/documents", "docaxis/store"}
    assert "docaxis/overdue:overdue_documents" in _check_keys(exchange)
    sync_all = defs.resolve_job_def("sync_all")
    # The store is fed by docaxis_exchange (its sensor sees what a sync landed), not by the sync itself.
    assert not any(k.to_user_string().startswith("docaxis/") for k in sync_all.asset_layer.selected_asset_keys)
    assert not any(k.startswith("docaxis/") for k in _check_keys(sync_all))  # a WARN about the calendar is not a sync's
    assert _check_keys(defs.resolve_job_def("docaxis_oversight")) == {"docaxis/overdue:overdue_documents"}
    assert "docaxis_inbox" in {s.name for s in defs.sensors}


def _tick(home: Path, cursor: str | None) -> dg.SensorResult:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": HubLake(home=str(home))})
        return docaxis_inbox(context)


def test_the_sensor_launches_a_run_exactly_when_there_is_work(sandbox_factory, tmp_path: Path, monkeypatch) -> None:
    with sandbox_factory(residents=1_500, seed=12, rate_limit=10_000, visibility_timeout_s=0.5) as sb:
        env = hub_env(sb, tmp_path)
        use_env(monkeypatch, env)
        monkeypatch.setattr(pipelines.documents, "_clock", lambda: 1_000_000.0)  # the first peek's follow-up never falls due
        first = _tick(tmp_path, None)
        jobs = {r.job_name: r for r in first.run_requests}
        assert set(jobs) == {"docaxis_exchange", "docaxis_oversight"}
        assert jobs["docaxis_exchange"].tags["hub/trigger"] == "messages waiting on the axis"
        cursor = first.cursor
        # Only the landing runs (as a sync_all or the old receive job would): the store is behind.
        landing_only = dg.define_asset_job("land_vdxp", selection=dg.AssetSelection.assets(dg.AssetKey(["landing", "vdxp"])))
        assert dg.Definitions.merge(defs, dg.Definitions(jobs=[landing_only])).resolve_job_def("land_vdxp").execute_in_process(
            instance=dg.DagsterInstance.ephemeral()).success
        behind = _tick(tmp_path, cursor)
        assert [r.job_name for r in behind.run_requests] == ["docaxis_exchange"]
        assert "landing parts not taken in" in behind.run_requests[0].tags["hub/trigger"]
        assert run_job().success
        sb.sandbox.vdxp.clock = (lambda real: lambda: real() + 60)(sb.sandbox.vdxp.clock)  # past any visibility
        idle = _tick(tmp_path, behind.cursor)
        assert not idle.run_requests and idle.skip_reason
        # A local system posts a status: the outbox has work.
        store = store_of(env)
        delivery = store.query("SELECT doc_id, agency FROM deliveries d JOIN messages m USING (doc_id) "
                               "WHERE m.business_type = 0 LIMIT 1")[0]
        store.post_status(delivery["doc_id"], delivery["agency"], "03")
        queued = _tick(tmp_path, idle.cursor)
        assert "1 outbox entries to send" in queued.run_requests[0].tags["hub/trigger"]
        # A new day: the overdue list is checked again.
        yesterday = json.dumps({**json.loads(queued.cursor), "day": "2000-01-01"})
        daily = _tick(tmp_path, yesterday)
        assert "docaxis_oversight" in [r.job_name for r in daily.run_requests]
        oversight = run_job("docaxis_oversight")
        [evaluation] = oversight.get_asset_check_evaluations()
        assert evaluation.passed is False and evaluation.metadata["overdue"].value == len(store.overdue())
        assert sum(evaluation.metadata["per_agency"].value.values()) == len(store.overdue())


def test_a_peek_is_never_repeated_before_the_message_it_hid_is_visible_again() -> None:
    peeks: list[int] = []

    def peek() -> int:
        peeks.append(1)
        return 1

    state: dict = {"peeked_at": None}
    assert inbox_reasons(state, 1000.0, [], peek, 60) == ["messages waiting on the axis"] and len(peeks) == 1
    assert inbox_reasons(state, 1030.0, [], peek, 60) == [] and len(peeks) == 1  # hidden still: no second peek
    assert inbox_reasons(state, 1031.0, ["2 outbox entries to send"], peek, 60) == ["2 outbox entries to send"]
    later = 1000.0 + 60 + PEEK_MARGIN_S
    assert inbox_reasons(state, later, [], peek, 60) == ["a message seen on the axis is visible again"]
    assert state["peeked_at"] is None and len(peeks) == 1
    assert inbox_reasons(state, later + 1, [], lambda: 0, 60) == []  # nothing waiting: nothing to do


def test_a_lone_message_is_received_by_the_follow_up_run(sandbox_factory, tmp_path: Path, monkeypatch) -> None:
    """The message the sensor's peek hid reaches the run launched once it is visible again."""
    with sandbox_factory(residents=1_500, seed=14, rate_limit=10_000, visibility_timeout_s=60) as sb:
        use_env(monkeypatch, hub_env(sb, tmp_path))
        axis = sb.sandbox.vdxp
        offset = [0.0]
        real = axis.clock
        axis.clock = lambda: real() + offset[0]
        monkeypatch.setattr(pipelines.documents, "_clock", lambda: 1_000_000.0 + offset[0])
        assert run_job().success  # the traffic, received
        offset[0] += 120
        lone = str(uuid.uuid4())
        with axis._lock:
            axis._append(Message(lone, "edoc", "000.00.00.G22", ("000.00.03.H31",), axis.now(),
                                 axis.package(next(m.doc_id for m in axis._messages.values()
                                                   if m.message_type == "edoc"))))
        first = _tick(tmp_path, json.dumps({"tick": 0, "day": "2999-01-01"}))
        assert first.run_requests and run_job().success and not settled(sb, lone)  # the peek hid it from this run
        offset[0] += 30
        waiting = _tick(tmp_path, first.cursor)
        assert not waiting.run_requests and axis._deliveries[(sb.env["HUB_VDXP_SYSTEM_ID"], lone)].count == 1
        offset[0] += 31 + PEEK_MARGIN_S
        follow_up = _tick(tmp_path, waiting.cursor)
        assert follow_up.run_requests[0].tags["hub/trigger"] == "a message seen on the axis is visible again"
        assert run_job().success and settled(sb, lone) == "done"
