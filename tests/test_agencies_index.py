"""The report index behind the agency service and `tipline reports`: built from routed files and events,
rebuilt from them at will, searched by analysts."""
import datetime
import json
import subprocess
import sys

from services.agencies.index import open_index
from tests.agency_service import REPO, routed_record, write_routed


def build(tmp_path):
    output = tmp_path / "out"
    write_routed(output, "GB", [routed_record("gb-1", "GB", priority="P1", user="alice", md5="AB" * 16, bundle_id="bnd-x"),
                                routed_record("gb-2", "GB", submitted_at="2026-11-23T02:00:00Z", esp_id="esp-07")])
    write_routed(output, "FR", [routed_record("fr-1", "FR", user="bob", md5="cd" * 16, bundle_id="bnd-x")])
    return output


def test_a_report_redelivered_in_another_file_is_indexed_once_and_a_broken_file_stops_no_other(tmp_path):
    output = build(tmp_path)
    write_routed(output, "GB", [routed_record("gb-1", "GB", priority="P1")], window="2026-11-23T01:00:00--2026-11-23T02:00:00")
    broken = output / "routed" / "jurisdiction=GB" / "2026-11-23T00:30:00--2026-11-23T01:00:00-broken.avro"
    broken.write_bytes(b"not avro at all")
    write_routed(output, "GB", [routed_record("gb-3", "GB")], window="2026-11-23T03:00:00--2026-11-23T04:00:00")
    (output / "routed" / "jurisdiction=GB" / ".in-progress.avro").write_bytes(b"half written")
    index = open_index(output)
    assert index.refresh() == 4
    assert list(index.unreadable) == [broken]
    assert sorted(row["report_id"] for row in index.find()) == ["fr-1", "gb-1", "gb-2", "gb-3"]
    assert index.refresh() == 0


def test_find_by_each_filter(tmp_path):
    index = open_index(build(tmp_path))
    index.refresh()
    ids = lambda **filters: sorted(row["report_id"] for row in index.find(**filters))
    assert ids(report_id="gb-2") == ["gb-2"]
    assert ids(user="alice") == ["gb-1"] and ids(user="screen_bob") == ["fr-1"]
    assert ids(hash_value="ab" * 16) == ["gb-1"] and ids(hash_value="CD" * 16) == ["fr-1"]
    assert ids(bundle_id="bnd-x") == ["fr-1", "gb-1"]
    assert ids(esp="esp-07") == ["gb-2"] and ids(esp="examplesocial") == ["fr-1", "gb-1", "gb-2"]
    assert ids(jurisdiction="GB", priority="P1") == ["gb-1"]
    since = datetime.datetime(2026, 11, 23, 1, tzinfo=datetime.timezone.utc)
    assert ids(since=since) == ["gb-2"] and ids(until=since) == ["fr-1", "gb-1"]
    assert ids(user="alice' OR '1'='1") == [] and ids(hash_value="%") == []


def test_a_rebuilt_index_keeps_referrals_and_acknowledgements(tmp_path):
    output = build(tmp_path)
    index = open_index(output)
    index.refresh()
    index.refer("fr-1", "GB", "user is in the UK", "analyst")
    index.acknowledge("uk", "gb-1", "GB")
    before = (index.find(), index.list_for(["GB"]), index.acknowledged_by("uk", ["gb-1", "gb-2"]))
    rebuilt = subprocess.run([sys.executable, "-m", "pipelines.cli", "reports", "reindex", "--output", str(output)],
                             cwd=REPO, capture_output=True, text=True)
    assert rebuilt.returncode == 0 and "indexed 3 reports from 2 routed files" in rebuilt.stdout
    again = open_index(output)
    assert (again.find(), again.list_for(["GB"]), again.acknowledged_by("uk", ["gb-1", "gb-2"])) == before
    assert [row["report_id"] for row in again.list_for(["GB"])][0] == "fr-1"
    assert again.get_for(["FR"], "fr-1") is None
    assert again.get_for(["GB"], "fr-1")["referrals"][0]["reason"] == "user is in the UK"
    events = [json.loads(line) for line in (output / "agencies-state" / "referrals.jsonl").read_text().splitlines()]
    assert [(e["reportId"], e["from"], e["to"]) for e in events] == [("fr-1", "FR", "GB")]


def version_2_schema():
    """The routed schema before instants became timestamp-micros: RFC 3339 strings, no routedAt or decidedWith."""
    import copy

    from schemas import avro_schema

    schema = copy.deepcopy(avro_schema("routed_report"))  # the cached schema is shared
    fields = [field for field in schema["fields"] if field["name"] not in ("routedAt", "decidedWith")]
    for field in fields:
        if field["name"] == "submittedAt":
            field["type"] = "string"
        elif field["name"] == "incidentDateTime":
            field["type"] = ["null", "string"]
    return {**schema, "fields": fields}


def test_version_2_and_3_files_both_print_their_instants_as_iso_8601_with_z(tmp_path):
    import fastavro

    output = tmp_path / "out"
    write_routed(output, "GB", [routed_record("gb-new", "GB", submitted_at="2026-11-23T02:00:00.25+01:00")])
    old = routed_record("gb-old", "GB")
    old.update(schemaVersion=2, submittedAt="2026-11-23T00:10:00Z", incidentDateTime="2026-11-22T23:00:00Z")
    folder = output / "routed" / "jurisdiction=GB"
    with open(folder / "20261123T000000Z--20261123T010000Z-old.avro", "wb") as handle:
        fastavro.writer(handle, version_2_schema(), [old])
    index = open_index(output)
    assert index.refresh() == 2
    new, old = index.get_for(["GB"], "gb-new"), index.get_for(["GB"], "gb-old")
    assert (new["submitted_at"], new["record"]["submittedAt"]) == ("2026-11-23T01:00:00.250000Z",) * 2
    assert new["record"]["routedAt"] == "2026-11-23T01:00:05.250000Z"
    assert (old["submitted_at"], old["record"]["incidentDateTime"]) == ("2026-11-23T00:10:00Z", "2026-11-22T23:00:00Z")
    assert [row["report_id"] for row in index.find(since=datetime.datetime(2026, 11, 23, 0, 30,
                                                                           tzinfo=datetime.timezone.utc))] == ["gb-new"]
