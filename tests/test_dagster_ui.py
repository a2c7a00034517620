"""The Dagster UI as an operator uses it: `hub.orchestration.start_ui` against a sandbox, driven through
its GraphQL API to list the code location, switch automation off, launch runs and read their outcome.

The UI executes runs the way a deployment does (queued for the daemon, each in its own subprocess), so
this is the test that shows the code location works outside ``execute_in_process``: that the
environment handed to ``start_ui`` reaches the runs, and that what a run records (materialisations,
their metadata, check verdicts, step failures) is what the UI serves.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest
import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from hub.orchestration import start_ui, stop_process_group, ui_log

pytestmark = [
    pytest.mark.timeout(600),
    # dagster_graphql's client calls gql in a form gql has deprecated; nothing this project can change.
    pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning"),
]

T = TypeVar("T")
RESIDENTS = 1_000
#: The implicit job of every asset, which the UI's "Materialize" button launches with an asset selection.
ASSET_JOB = "__ASSET_JOB"
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
UI_START_S = 240  # `dagster dev` takes 10-40 s on a small machine; generous for a loaded one
RUN_S = 240  # each run: queued by the daemon, a subprocess per run and per step

REPOSITORY = """{ repositoriesOrError { __typename
  ... on RepositoryConnection { nodes { name location { name } jobs { name } assetNodes { assetKey { path } }
    sensors { name sensorState { id status } } schedules { name scheduleState { id status } } } }
  ... on PythonError { message } } }"""
WORKSPACE = """{ workspaceOrError { __typename
  ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } }
  ... on PythonError { message } } }"""
STOP_SENSOR = """mutation($id: String!) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
STOP_SCHEDULE = """mutation($id: String!) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
METADATA = """metadataEntries { label __typename ... on IntMetadataEntry { intValue } ... on PathMetadataEntry { path }
  ... on FloatMetadataEntry { floatValue } ... on TextMetadataEntry { text } }"""
RUN_EVENTS = """query($runId: ID!, $after: String) { logsForRun(runId: $runId, afterCursor: $after) { __typename
  ... on EventConnection { cursor hasMore events { __typename
    ... on MaterializationEvent { stepKey assetKey { path } %s }
    ... on AssetCheckEvaluationEvent { evaluation { checkName success assetKey { path } } }
    ... on ExecutionStepFailureEvent { stepKey error { message } } } }
  ... on PythonError { message } } }""" % METADATA
ASSET_HISTORY = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { __typename
  ... on Asset { assetMaterializations(limit: 1000) { runId %s } } } }""" % METADATA


@dataclass
class RunningUI:
    """A started `dagster dev`, its log file, and a GraphQL client on it."""

    process: subprocess.Popen
    url: str
    client: DagsterGraphQLClient
    log: Path

    def assert_alive(self) -> None:
        """A UI that exits while we wait for it would otherwise look like a slow one until the deadline."""
        code = self.process.poll()
        assert code is None, f"dagster dev exited with {code}:\n{self.stderr()}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        """POST one query; GraphQL reports errors beside the data with status 200, so they are checked here."""
        answer = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        answer.raise_for_status()
        body = answer.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(check: Callable[[], T | None], timeout_s: float, what: str, ui: RunningUI, every_s: float = 0.5) -> T:
    """``check()`` until it returns something truthy, failing with the UI's stderr at the deadline or if it exits."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        ui.assert_alive()
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:g} s; dagster dev stderr:\n{ui.stderr()}"
        pause.wait(every_s)


def processes_of(dagster_home: Path) -> list[str]:
    """Live processes started with this ``DAGSTER_HOME``, whatever their process group."""
    marker = f"DAGSTER_HOME={dagster_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {command[:160]}")
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def location_loaded(ui: RunningUI) -> bool:
    """True once the code location is loaded; a location that fails to import fails the test with its error."""
    workspace = ui.graphql(WORKSPACE)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    entries = workspace["locationEntries"]
    for entry in entries:
        loaded = entry["locationOrLoadError"]
        assert not loaded or loaded["__typename"] != "PythonError", f"{entry['name']}: {loaded['message']}"
    return bool(entries) and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)


def server_answers(ui: RunningUI) -> bool:
    try:
        return requests.get(f"{ui.url}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


@contextmanager
def running_ui(hub_home: Path, environ: dict[str, str]) -> Iterator[RunningUI]:
    """The UI from ``start_ui``, once its code location is loaded; stopped on the way out, whatever happened."""
    port = free_port()
    process = start_ui(hub_home, port, environ)
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        ui = RunningUI(process, f"http://127.0.0.1:{port}", client, ui_log(hub_home))
        poll(lambda: server_answers(ui), UI_START_S, "answer on /server_info", ui)
        poll(lambda: location_loaded(ui), UI_START_S, "loaded code location", ui)
        yield ui
    finally:
        stop_process_group(process)


@pytest.fixture
def hub_env(sandbox_factory, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A small sandbox and the variables that point the hub (and so the UI's runs) at it and at ``tmp_path``."""
    with sandbox_factory(residents=RESIDENTS, rate_limit=10_000, visibility_timeout_s=2) as sb:
        yield {**sb.env, "HUB_HOME": str(tmp_path), "HUB_VDXP_VISIBILITY_TIMEOUT": "2"}


def repository(ui: RunningUI) -> dict[str, Any]:
    answer = ui.graphql(REPOSITORY)["repositoriesOrError"]
    assert answer["__typename"] == "RepositoryConnection", answer
    assert len(answer["nodes"]) == 1, [n["name"] for n in answer["nodes"]]
    return answer["nodes"][0]


def switch_automation_off(ui: RunningUI, repo: dict[str, Any]) -> None:
    """Stop every running sensor and schedule, so that only the test's runs land or rebuild anything (the
    hourly schedules would otherwise fire whenever the test crosses their minute)."""
    for sensor in repo["sensors"]:
        if sensor["sensorState"]["status"] == "RUNNING":
            result = ui.graphql(STOP_SENSOR, id=sensor["sensorState"]["id"])["stopSensor"]
            assert result.get("instigationState", {}).get("status") == "STOPPED", (sensor["name"], result)
    for schedule in repo["schedules"]:
        if schedule["scheduleState"]["status"] == "RUNNING":
            result = ui.graphql(STOP_SCHEDULE, id=schedule["scheduleState"]["id"])["stopRunningSchedule"]
            assert result.get("scheduleState", {}).get("status") == "STOPPED", (schedule["name"], result)


def launch(ui: RunningUI, assets: list[list[str]], run_config: dict[str, Any] | None = None) -> str:
    """Materialise ``assets`` as the UI's "Materialize" button does: the asset job with an asset selection."""
    return ui.client.submit_job_execution(ASSET_JOB, asset_selection=assets, run_config=run_config)


def outcome(ui: RunningUI, run_id: str) -> DagsterRunStatus:
    """The run's terminal status; it passes through QUEUED, STARTING and STARTED on the way."""
    def finished() -> DagsterRunStatus | None:
        status = ui.client.get_run_status(run_id)
        return status if status in TERMINAL else None

    return poll(finished, RUN_S, f"end of run {run_id}", ui, every_s=1)


def run_events(ui: RunningUI, run_id: str) -> list[dict[str, Any]]:
    """Every event of the run that the queries pick out, page by page."""
    events: list[dict[str, Any]] = []
    after = None
    while True:
        page = ui.graphql(RUN_EVENTS, runId=run_id, after=after)["logsForRun"]
        assert page["__typename"] == "EventConnection", page
        events += [e for e in page["events"] if len(e) > 1]
        if not page["hasMore"]:
            return events
        after = page["cursor"]


def metadata(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Metadata entries by label, with the value of the types the hub uses."""
    values = {}
    for entry in entries:
        kept = {k: v for k, v in entry.items() if k not in ("label", "__typename")}
        values[entry["label"]] = next(iter(kept.values()), None)
    return values


def materialized(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {"/".join(e["assetKey"]["path"]): metadata(e["metadataEntries"])
            for e in events if e["__typename"] == "MaterializationEvent"}


def verdicts(events: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    return {("/".join(e["evaluation"]["assetKey"]["path"]), e["evaluation"]["checkName"]): e["evaluation"]["success"]
            for e in events if e["__typename"] == "AssetCheckEvaluationEvent"}


def rows_ever_landed(ui: RunningUI, asset: list[str]) -> int:
    """Rows over every materialisation of ``asset`` in the instance, whichever run made it."""
    answer = ui.graphql(ASSET_HISTORY, path=asset)["assetOrError"]
    assert answer["__typename"] == "Asset", answer
    return sum(metadata(m["metadataEntries"]).get("rows") or 0 for m in answer["assetMaterializations"])


def assert_population_synced(ui: RunningUI, tmp_path: Path) -> None:
    """Land the population copy and rebuild citizens through the UI; read the outcome back from it."""
    run_id = launch(ui, [["landing", "population"], ["canonical", "citizens"]])
    assert outcome(ui, run_id) == DagsterRunStatus.SUCCESS, run_events(ui, run_id)
    events = run_events(ui, run_id)
    assets = materialized(events)
    assert set(assets) == {"landing/population", "canonical/citizens"}
    assert assets["canonical/citizens"]["rows"] == RESIDENTS
    # The run found HUB_HOME (handed to start_ui) and the sandbox's credentials (or it would have failed).
    assert Path(assets["canonical/citizens"]["path"]).is_relative_to(tmp_path.resolve() / "lake")
    assert "rows" in assets["landing/population"]
    # Every resident landed exactly once, by this run or by a run that got to the cursor first.
    assert rows_ever_landed(ui, ["landing", "population"]) == RESIDENTS
    checks = verdicts(events)
    assert {name for _, name in checks} >= {"schema_matches", "keys_unique", "identifiers_valid", "quarantine_rate",
                                            "copy_is_legally_valid"}
    assert all(checks.values()), {k: v for k, v in checks.items() if not v}


def assert_publishing_an_unbuilt_lake_fails(ui: RunningUI, tmp_path: Path) -> None:
    """The snapshot over an empty lake (the resource pointed elsewhere by run config) fails, and says why."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run_id = launch(ui, [["published", "snapshot"]], {"resources": {"lake": {"config": {"home": str(empty)}}}})
    assert outcome(ui, run_id) == DagsterRunStatus.FAILURE
    events = run_events(ui, run_id)
    failures = {e["stepKey"]: e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"}
    assert list(failures) == ["published__snapshot"], failures
    assert "has not been built yet" in failures["published__snapshot"]
    assert not materialized(events)
    assert not list((empty / "lake" / "published").glob("*.duckdb"))  # nothing published, nothing half-built left


def test_the_ui_launches_runs_and_reports_their_outcome(hub_env: dict[str, str], tmp_path: Path):
    with running_ui(tmp_path, hub_env) as ui:
        repo = repository(ui)
        assert {"docaxis_exchange", ASSET_JOB} <= {job["name"] for job in repo["jobs"]}
        keys = {"/".join(node["assetKey"]["path"]) for node in repo["assetNodes"]}
        assert {"landing/population", "canonical/citizens", "published/snapshot"} <= keys
        switch_automation_off(ui, repo)
        assert_population_synced(ui, tmp_path)
        assert_publishing_an_unbuilt_lake_fails(ui, tmp_path)
    assert not processes_of((tmp_path / "dagster").resolve()), "dagster processes outlived the UI"
