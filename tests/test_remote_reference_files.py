"""Reference files behind a non-local Beam filesystem: every GeoIP database and bank (and the input) on the
`fakegcs://` stand-in for GCS (tests/gcs_standin.py), staged once per worker and used by the whole run."""
import json
import os

import fastavro
import pytest

from pipelines.tipline_pipeline import run
from tests import gcs_standin
from tests.conftest import MAXMIND, example_report
from transforms.location.geoip import open_reader
from transforms.matching.banks import bank_fingerprint, read_bank
from transforms.plumbing import reference_files
from transforms.plumbing.reference_files import ReferenceFileError, sha256_of, stage

KNOWN_MD5 = "9e107d9d372bb6826bd81d3542a419d6"  # the contract example's provided hash
DATABASES = {"city": "GeoIP2-City-Test.mmdb", "asn": "GeoLite2-ASN-Test.mmdb",
             "anonymous": "GeoIP2-Anonymous-IP-Test.mmdb"}


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """An empty stand-in bucket `fakegcs://ref`, and an empty staging cache, for one test."""
    monkeypatch.setenv(gcs_standin.ROOT_ENV, str(tmp_path / "gcs"))
    monkeypatch.setenv(reference_files.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "gcs" / "ref").mkdir(parents=True)
    return tmp_path


def upload(bucket, name, data):
    path = bucket / "gcs" / "ref" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"fakegcs://ref/{name}"


def staged_files(bucket):
    return sorted(name for name in os.listdir(bucket / "cache") if not name.endswith((".lock", ".sha256")))


def report(report_id, ip):
    found = example_report()
    found["reportId"] = report_id
    found["files"][0]["ipCaptureEvent"]["ipAddress"] = ip
    found["personOrUserReported"]["ipCaptureEvents"] = []
    return found


def test_a_remote_file_is_copied_once_and_checked(bucket):
    url = upload(bucket, "geoip/city.mmdb", (MAXMIND / DATABASES["city"]).read_bytes())
    first = stage(url)
    assert stage(url) == first and staged_files(bucket) == [os.path.basename(first)]
    assert open(first, "rb").read() == (MAXMIND / DATABASES["city"]).read_bytes()
    assert reference_files.recorded_digest(first) == sha256_of(first)


def test_an_altered_copy_is_fetched_again(bucket):
    url = upload(bucket, "banks/known.csv", b"hash_type,hash_value,bank\nMD5,%s,known\n" % KNOWN_MD5.encode())
    copy = stage(url)
    original = open(copy, "rb").read()
    with open(copy, "r+b") as handle:  # same size, one byte changed: only the digest can tell
        handle.write(b"X")
    assert stage(url) == copy and open(copy, "rb").read() == original


def test_a_rewritten_source_is_a_new_copy_and_the_old_one_goes(bucket):
    url = upload(bucket, "banks/known.csv", b"hash_type,hash_value,bank\nMD5,%s,known\n" % KNOWN_MD5.encode())
    before, fingerprint = stage(url), bank_fingerprint([url])
    upload(bucket, "banks/known.csv", b"hash_type,hash_value,bank\nMD5,%s,known\nMD5,%s,known\n"
           % (KNOWN_MD5.encode(), b"0" * 32))
    os.utime(bucket / "gcs" / "ref" / "banks" / "known.csv", (1, 1))
    assert bank_fingerprint([url]) != fingerprint
    after = stage(url)
    assert after != before and staged_files(bucket) == [os.path.basename(after)]
    assert len(read_bank(url)) == 2


def test_a_missing_remote_database_names_its_kind(bucket):
    with pytest.raises(ValueError, match=r"^City database: fakegcs://ref/nope.mmdb: expected one file, found 0"):
        open_reader("fakegcs://ref/nope.mmdb", "city")
    with pytest.raises(ReferenceFileError):
        read_bank("fakegcs://ref/nope.csv")


def test_a_local_path_is_used_where_it_is(bucket):
    assert stage(str(MAXMIND / DATABASES["city"])) == str(MAXMIND / DATABASES["city"])
    assert not (bucket / "cache").exists()


def test_a_file_uri_is_the_local_path_it_names(bucket):
    """The contract's own form for local files, `file:///...`, once passed preflight and then failed on
    the workers with "file not found"."""
    assert stage((MAXMIND / DATABASES["city"]).as_uri()) == str(MAXMIND / DATABASES["city"])
    assert open_reader((MAXMIND / DATABASES["city"]).as_uri(), "city").metadata().database_type == "GeoIP2-City"
    assert not (bucket / "cache").exists()


def routed(out):
    """{reportId: record without `routedAt`} (the time each run routed it, which two runs cannot share)."""
    records = []
    for path in sorted((out / "routed").rglob("*.avro")):
        with path.open("rb") as handle:
            records.extend(fastavro.reader(handle))
    return {record["reportId"]: {key: value for key, value in record.items() if key != "routedAt"}
            for record in records}


def run_with(references, input_path, out):
    return run(["--source", "files", "--input", input_path, "--output", str(out),
                "--geoip-city-db", references["city"], "--geoip-asn-db", references["asn"],
                "--geoip-anonymous-db", references["anonymous"],
                "--hash-bank", references["bank"], "--negative-hash-bank", references["negative"]])


def test_the_pipeline_runs_with_every_reference_file_remote(bucket):
    bank = b"hash_type,hash_value,bank,label,external_id\nMD5,%s,known,series-1,k-1\n" % KNOWN_MD5.encode()
    negative = b"hash_type,hash_value,bank,label,external_id\nMD5,%s,benign,,\n" % (b"1" * 32)
    reports = [report("r-proxy", "81.2.69.142"), report("r-wa", "216.160.83.56"), report("r-asn", "149.101.100.1")]
    lines = ("\n".join(json.dumps(r) for r in reports) + "\n").encode()
    remote = {kind: upload(bucket, f"geoip/{name}", (MAXMIND / name).read_bytes()) for kind, name in DATABASES.items()}
    remote.update(bank=upload(bucket, "banks/known.csv", bank), negative=upload(bucket, "banks/benign.csv", negative))
    local = {kind: (MAXMIND / name).as_uri() for kind, name in DATABASES.items()}  # the file:// form
    (bucket / "local").mkdir()
    (bucket / "local" / "known.csv").write_bytes(bank)
    (bucket / "local" / "benign.csv").write_bytes(negative)
    local.update(bank=(bucket / "local" / "known.csv").as_uri(), negative=str(bucket / "local" / "benign.csv"))
    (bucket / "local" / "reports.jsonl").write_bytes(lines)

    summary = run_with(remote, upload(bucket, "in/reports.jsonl", lines), bucket / "remote-out")
    records = routed(bucket / "remote-out")

    assert summary["routed"] == 3 and summary["reconciled"] and summary["dead_lettered"] == 0
    assert (records["r-proxy"]["jurisdiction"], records["r-wa"]["jurisdiction"]) == ("UNKNOWN", "US-WA")
    assert records["r-proxy"]["location"]["anonymous"] is True  # the Anonymous-IP database was read
    assert (records["r-asn"]["location"]["countryCode"], records["r-asn"]["location"]["asn"]) == ("US", 6167)
    assert all(r["matchSummary"] == "known" for r in records.values())  # the remote bank was read
    assert len(staged_files(bucket)) == 5  # three databases and two banks, each copied once

    run_with(local, str(bucket / "local" / "reports.jsonl"), bucket / "local-out")
    assert routed(bucket / "local-out") == records


def test_the_first_reference_load_in_a_process_takes_what_is_alive_out_of_the_collector(tmp_path):
    """Readers and banks are loaded once a worker and live as long as it: frozen out of the collector's full
    passes on the first load, and only then (a refresh does not freeze again)."""
    import subprocess
    import sys

    (tmp_path / "a").write_text("one")
    script = f"""
import gc
from apache_beam.utils.shared import Shared
from transforms.plumbing.metrics import counter
from transforms.plumbing.reference_files import RefreshedOnChange

class Bank:  # Shared holds what it builds by weak reference
    def __init__(self):
        self.entries = [[index] for index in range(50_000)]

def load(name):
    return RefreshedOnChange(Shared(), [{str(tmp_path / 'a')!r}], Bank, 60, counter("reloads"),
                             counter("reload_failures"), name).get()

before = gc.get_freeze_count()
first = load("first")
after_first = gc.get_freeze_count()
second = load("second")
print(before, after_first, gc.get_freeze_count(), first is not second)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    before, after_first, after_second, distinct = result.stdout.split()
    assert int(before) == 0 and int(after_first) > 50_000 and int(after_second) == int(after_first)
    assert distinct == "True"
