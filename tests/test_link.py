"""Record linkage against the sandbox's ground truth, and the linker's rules case by case.

The provinces are real sandboxes served over loopback and pulled through the real connectors (the
business registry through variant B, which carries the representatives' ID papers); the ground truth
the sandbox wrote says who every mention really is. The hand-made cases put a few chosen people among
a deterministic background population, so that the estimated weights have something to learn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from connectors.extract import run_extract
from connectors.registry import build_connector
from hub.config import ConfigError, Settings
from hub.reconcile.link import (BANDS, BLOCKING_KEYS, LINK_SCHEMA, LINKED_BANDS, METHODS, Thresholds, link, review_queue,
                                run_linkage, write_review_queue)
from hub.reconcile.quality import score_links
from sandbox import names
from sandbox.faults import FaultPlan
from tests.conftest import start_sandbox

pytestmark = pytest.mark.timeout(300)

STRICT = Thresholds(match=0.99, review=0.5)
#: Data faults well above the defaults: every ID fault, every name fault, representatives' names.
RAISED_FAULTS = {"id_typo": 0.08, "id_swap": 0.08, "id_cmnd_instead": 0.12, "name_no_diacritics": 0.2,
                 "name_nfd": 0.2, "name_old_tone": 0.5, "name_upper": 0.5, "name_all_in_ten": 0.2,
                 "rep_name_mismatch": 0.15}
CIVIL_ID_COLUMNS = ("child_personal_id", "mother_id_number", "father_id_number", "requester_id_number",
                    "deceased_id_number", "husband_id_number", "wife_id_number")
ROLES_WITH_BIRTH_DATE = ("child", "mother", "father", "deceased", "husband", "wife")


@dataclass
class Province:
    citizens: Path
    civil: Path
    enterprises: Path
    truth: Path


def extract_province(out: Path, residents: int, seed: int, data_faults: dict[str, float] | None = None) -> Province:
    """Serve a sandbox, pull its population, civil-status and business registries (variant B) through
    the connectors into ``out``, and write its ground truth."""
    plan = FaultPlan(data=dict(data_faults or {}))
    with start_sandbox(residents=residents, seed=seed, faults=plan, rate_limit=0) as sb:
        sb.sandbox.truth.write(out / "truth")
        env = {**sb.env, "HUB_BUSINESS_VARIANT": "B", "HUB_HOME": str(out / "home"),
               **{f"HUB_{s}_RATE_LIMIT": "0" for s in ("POPULATION", "CIVIL", "BUSINESS")}}
        settings = Settings.from_env(env)
        for system in ("population", "civil", "business"):
            run_extract(build_connector(system, settings, env), out / system)
    return Province(out / "population" / "citizens.parquet", out / "civil" / "civil_events.parquet",
                    out / "business" / "enterprises.parquet", out / "truth")


@pytest.fixture(scope="module")
def default_province(tmp_path_factory) -> Province:
    return extract_province(tmp_path_factory.mktemp("default"), residents=4_000, seed=11)


@pytest.fixture(scope="module")
def faulty_province(tmp_path_factory) -> Province:
    return extract_province(tmp_path_factory.mktemp("faulty"), residents=4_000, seed=12, data_faults=RAISED_FAULTS)


def assert_well_formed(links: pa.Table) -> None:
    assert links.schema.equals(LINK_SCHEMA)
    assert set(links["band"].to_pylist()) <= set(BANDS)
    assert set(links["method"].to_pylist()) <= set(METHODS)
    explanations = links["explanation"].to_pylist()
    assert all(text and text.strip() for text in explanations), "every link explains itself"
    linked = pc.is_in(links["band"], pa.array(["exact", "match", "review"]))
    assert pc.all(pc.equal(pc.is_valid(links["personal_id"]), linked)).as_py()


# -- quality against the ground truth ------------------------------------------------------------------

def test_default_faults_meet_the_quality_targets(default_province: Province) -> None:
    p = default_province
    links = link(p.citizens, p.civil, p.enterprises, thresholds=STRICT)
    assert_well_formed(links)
    quality = score_links(links, p.truth, p.citizens)
    assert quality.precision >= 0.995, quality.summary()
    assert quality.recall >= 0.98, quality.summary()
    registries = score_links(links, p.truth, p.citizens, datasets=("civil_events", "enterprises"))
    assert registries.in_scope > 400  # the province has births, deaths, marriages and enterprises to link
    assert registries.precision >= 0.995, registries.summary()
    assert registries.recall >= 0.98, registries.summary()
    assert registries.unmentioned == 0, "every person a civil or business record names has a mention"
    methods = {row["method"] for row in registries.by_method}
    assert {"id", "cmnd", "id_typo"} <= methods  # the default faults show every number path
    roles = {row["role"] for row in registries.by_role}
    assert roles == {"child", "mother", "father", "requester", "deceased", "husband", "wife", "legal_representative"}


def test_raised_faults_meet_the_quality_targets(faulty_province: Province) -> None:
    p = faulty_province
    links = link(p.citizens, p.civil, p.enterprises, thresholds=STRICT)
    assert_well_formed(links)
    quality = score_links(links, p.truth, p.citizens, datasets=("civil_events", "enterprises"))
    assert quality.precision >= 0.995, quality.summary()
    assert quality.recall >= 0.98, quality.summary()
    by_method = {(row["method"], row["band"]): row for row in quality.by_method}
    typo = by_method[("id_typo", "match")]
    assert typo["mentions"] >= 40 and typo["correct"] == typo["mentions"]


def test_missing_ids_are_linked_by_name_and_birth_date(faulty_province: Province) -> None:
    """A third of the civil records' ID fields emptied: the blocking keys and the scores must carry them."""
    p = faulty_province
    civil = pq.read_table(p.civil)
    rng = np.random.default_rng(3)
    for column in CIVIL_ID_COLUMNS:
        blank = pa.array(rng.random(civil.num_rows) < 1 / 3)
        civil = civil.set_column(civil.column_names.index(column), column,
                                 pc.if_else(blank, pa.scalar(None, pa.string()), civil[column]))
    links = link(p.citizens, civil, p.enterprises, thresholds=STRICT, include_citizen_relatives=False)
    assert_well_formed(links)
    quality = score_links(links, p.truth, p.citizens)
    assert quality.precision >= 0.995, quality.summary()
    dated = [row for row in quality.by_role if row["role"] in ROLES_WITH_BIRTH_DATE]
    found, findable = sum(r["true_positives"] for r in dated), sum(r["in_scope"] for r in dated)
    assert found / findable >= 0.98, (found, findable)
    probabilistic = [row for row in quality.by_method if row["method"] == "probabilistic" and row["band"] == "match"]
    assert probabilistic and probabilistic[0]["mentions"] >= 80


def test_thresholds_from_the_environment_change_the_bands(faulty_province: Province, monkeypatch) -> None:
    p = faulty_province
    monkeypatch.delenv("HUB_CONFIG", raising=False)
    monkeypatch.chdir(p.truth)  # no hub.env here
    monkeypatch.delenv("HUB_LINK_MATCH_THRESHOLD", raising=False)
    monkeypatch.delenv("HUB_LINK_REVIEW_THRESHOLD", raising=False)
    default = link(p.citizens, p.civil, p.enterprises, include_citizen_relatives=False)
    monkeypatch.setenv("HUB_LINK_MATCH_THRESHOLD", "0.999999999")
    monkeypatch.setenv("HUB_LINK_REVIEW_THRESHOLD", "0.9")
    strict = link(p.citizens, p.civil, p.enterprises, include_citizen_relatives=False)

    def count(table: pa.Table, band: str) -> int:
        return pc.sum(pc.equal(table["band"], band)).as_py()

    assert count(strict, "match") < count(default, "match")
    assert count(strict, "review") > count(default, "review")
    assert count(strict, "exact") == count(default, "exact")  # exact does not depend on the score
    moved = pc.and_(pc.equal(default["band"], "match"), pc.equal(strict["band"], "review"))
    assert pc.all(pc.less(strict.filter(moved)["score"], 0.999999999)).as_py()


@pytest.mark.parametrize("variables, named", [
    ({"HUB_LINK_MATCH_THRESHOLD": "high"}, "HUB_LINK_MATCH_THRESHOLD"),
    ({"HUB_LINK_MATCH_THRESHOLD": "1.5"}, "HUB_LINK_MATCH_THRESHOLD"),
    ({"HUB_LINK_REVIEW_THRESHOLD": "-0.1"}, "HUB_LINK_REVIEW_THRESHOLD"),
    ({"HUB_LINK_REVIEW_THRESHOLD": "nan"}, "HUB_LINK_REVIEW_THRESHOLD"),
    ({"HUB_LINK_MATCH_THRESHOLD": "0.6", "HUB_LINK_REVIEW_THRESHOLD": "0.8"}, "HUB_LINK_REVIEW_THRESHOLD"),
])
def test_bad_threshold_values_are_refused_by_name(variables: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Thresholds.from_env(variables)


def test_thresholds_default_and_read_numbers() -> None:
    assert Thresholds.from_env({}) == Thresholds()
    assert Thresholds.from_env({"HUB_LINK_MATCH_THRESHOLD": " 0.9 ", "HUB_LINK_REVIEW_THRESHOLD": "0.2"}) == \
        Thresholds(match=0.9, review=0.2)


def test_no_blocking_key_is_the_family_name_alone() -> None:
    for key in BLOCKING_KEYS:
        assert set(key.columns) - {"family_key"}, key
        assert key.max_block > 0


# -- hand-made cases ---------------------------------------------------------------------------------

def _id(province: str, gender: int, year: int, serial: int) -> str:
    return f"{province}{2 * ((year - 1900) // 100) + gender - 1}{year % 100:02d}{serial:06d}"


def background(n: int = 3_000, seed: int = 5) -> list[dict]:
    """A deterministic population to put the chosen people among (unique IDs, common names)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        gender = int(rng.integers(1, 3))
        family = names.FAMILY[int(rng.choice(len(names.FAMILY), p=names.FAMILY_P))]
        middle = names.MIDDLE[gender - 1][int(rng.integers(0, len(names.MIDDLE[gender - 1])))]
        given = names.GIVEN[gender - 1][int(rng.integers(0, len(names.GIVEN[gender - 1])))]
        born = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 60 * 365)))
        rows.append(citizen(_id("031", gender, born.year, 100_000 + k), family, middle, given, gender, born,
                            cmnd=f"{30_000_000 + k:09d}" if k % 2 else None, ward=f"{11_300 + k % 40}"))
    return rows


def citizen(personal_id: str, family: str, middle: str, given: str, gender: int, born: date, cmnd: str | None = None,
            ward: str = "11311") -> dict:
    return {"personal_id": personal_id, "cmnd": cmnd, "family_name": family, "middle_name": middle,
            "given_name": given, "gender": gender, "birth_year": born.year, "birth_date": born,
            "permanent_province_code": "31", "permanent_district_code": "", "permanent_ward_code": ward}


def citizens_table(chosen: list[dict]) -> pa.Table:
    rows = background() + chosen
    types = {"gender": pa.int8(), "birth_year": pa.int16(), "birth_date": pa.date32()}
    return pa.table({name: pa.array([r[name] for r in rows], types.get(name, pa.string())) for name in rows[0]})


def marriages(*couples: tuple[dict, dict]) -> pa.Table:
    """KH records: (husband, wife) mentions, each ``{name, birth_date, id_number, id_type}``."""
    columns: dict[str, list] = {"module": [], "record_id": []}
    for side in ("husband", "wife"):
        for field in ("name", "birth_date", "id_number", "id_type"):
            columns[f"{side}_{field}"] = []
    for k, couple in enumerate(couples):
        columns["module"].append("KH")
        columns["record_id"].append(900_000 + k)
        for side, person in zip(("husband", "wife"), couple):
            for field in ("name", "birth_date", "id_number", "id_type"):
                columns[f"{side}_{field}"].append(person.get(field))
    types = {"record_id": pa.int64(), "husband_birth_date": pa.date32(), "wife_birth_date": pa.date32(),
             "husband_id_type": pa.int8(), "wife_id_type": pa.int8()}
    return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in columns.items()})


AN_1 = citizen(_id("031", 1, 1988, 424_242), "Nguyễn", "Văn", "An", 1, date(1988, 3, 14), cmnd="031456789")
AN_2 = citizen(_id("031", 1, 1988, 535_353), "Nguyễn", "Văn", "An", 1, date(1988, 9, 2))
BICH = citizen(_id("031", 2, 1990, 616_161), "Trần", "Thị", "Bích", 2, date(1990, 7, 21), cmnd="031987654")
HOA = citizen(_id("031", 2, 1992, 727_272), "Lê", "Thị", "Hòa", 2, date(1992, 11, 5))


@pytest.fixture(scope="module")
def people() -> pa.Table:
    return citizens_table([AN_1, AN_2, BICH, HOA])


def mention(person: dict, **changes) -> dict:
    base = {"name": " ".join(person[k] for k in ("family_name", "middle_name", "given_name")),
            "birth_date": person["birth_date"], "id_number": person["personal_id"], "id_type": 1}
    return {**base, **changes}


def row_of(links: pa.Table, record: int, role: str) -> dict:
    key = f"KH/{900_000 + record}"
    rows = [r for r in links.to_pylist() if r["record_key"] == key and r["role"] == role]
    assert len(rows) == 1
    return rows[0]


def test_a_transposed_id_is_found(people: pa.Table) -> None:
    true = AN_1["personal_id"]
    swapped = true[:7] + true[8] + true[7] + true[9:]
    assert swapped != true
    links = link(people, marriages((mention(AN_1, id_number=swapped), mention(BICH))), thresholds=STRICT,
                 include_citizen_relatives=False)
    husband = row_of(links, 0, "husband")
    assert husband["personal_id"] == true
    assert (husband["method"], husband["band"]) == ("id_typo", "match")
    assert "two adjacent digits swapped" in husband["explanation"] and swapped in husband["explanation"]


def test_a_cmnd_is_found(people: pa.Table) -> None:
    links = link(people, marriages((mention(AN_2), mention(BICH, id_number=BICH["cmnd"], id_type=2))),
                 thresholds=STRICT, include_citizen_relatives=False)
    wife = row_of(links, 0, "wife")
    assert wife["personal_id"] == BICH["personal_id"]
    assert (wife["method"], wife["band"]) == ("cmnd", "exact")
    assert "CMND" in wife["explanation"]


def test_a_name_without_diacritics_is_matched_by_id_and_birth_date(people: pa.Table) -> None:
    links = link(people, marriages((mention(AN_2), mention(HOA, name="LE THI HOA"))), thresholds=STRICT,
                 include_citizen_relatives=False)
    wife = row_of(links, 0, "wife")
    assert wife["personal_id"] == HOA["personal_id"]
    assert (wife["method"], wife["band"]) == ("id", "exact")
    assert "diacritics" in wife["explanation"] and "birth date equal" in wife["explanation"]


def test_a_namesake_born_another_day_is_not_linked(people: pa.Table) -> None:
    """Two Nguyễn Văn An born in 1988, and a third one, without an ID, born on neither day."""
    links = link(people, marriages((mention(AN_1, id_number=None, birth_date=date(1988, 5, 30)), mention(HOA)),
                                   (mention(AN_2, id_number=None), mention(BICH))),
                 thresholds=STRICT, include_citizen_relatives=False)
    stranger = row_of(links, 0, "husband")
    assert stranger["band"] not in LINKED_BANDS  # at most proposed for review, never linked
    assert stranger["score"] < 0.5 and stranger["candidates"] >= 2  # both namesakes compared, neither taken
    second = row_of(links, 1, "husband")  # the same name on the right day: that one, and only that one
    assert second["personal_id"] == AN_2["personal_id"] and second["method"] == "probabilistic"
    assert second["band"] in ("match", "review")


def test_a_family_name_alone_finds_no_candidate(people: pa.Table) -> None:
    links = link(people, marriages((mention(AN_1, name="Nguyễn Xuân Quyết", id_number=None,
                                            birth_date=date(1901, 1, 1)), mention(HOA))),
                 thresholds=STRICT, include_citizen_relatives=False)
    husband = row_of(links, 0, "husband")
    assert husband["candidates"] == 0 and husband["method"] == "none" and husband["band"] == "non_match"
    assert husband["explanation"].startswith("no candidate")


def test_an_exact_id_with_another_name_is_held_for_review(people: pa.Table, tmp_path: Path) -> None:
    links = link(people, marriages((mention(AN_1, name="Phùng Quốc Khải", birth_date=date(1950, 1, 1)),
                                    mention(HOA))), thresholds=STRICT, include_citizen_relatives=False)
    husband = row_of(links, 0, "husband")
    assert husband["band"] == "review" and husband["method"] == "id"
    assert husband["personal_id"] == AN_1["personal_id"]
    assert "name differs" in husband["explanation"]
    queue = pq.read_table(write_review_queue(links, tmp_path / "queue" / "review.parquet"))
    assert queue.num_rows == pc.sum(pc.equal(links["band"], "review")).as_py() >= 1
    assert set(queue["band"].to_pylist()) == {"review"}
    assert review_queue(links).num_rows == queue.num_rows


def test_the_model_is_estimated_from_the_data(default_province: Province) -> None:
    p = default_province
    result = run_linkage(p.citizens, p.civil, p.enterprises, thresholds=STRICT)
    weights = result.model.weights("civil_events")
    for comparison, w in weights.items():
        assert all(a >= b for a, b in zip(w[:-2], w[1:-1])), (comparison, w)  # better levels weigh more
    assert weights["id"][0] > 20 and weights["id"][4] < -5  # an equal ID is strong, a different one damning
    assert result.model.anchors["civil_events"]["name"] > 300  # m came from the data, not from the prior
    assert set(result.seconds) == {"prepare", "exact", "candidates", "estimate", "decide"}
