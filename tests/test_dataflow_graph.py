"""The Dataflow job graph, built by the real DataflowRunner with `--dry_run` (translated, never submitted).

A graph that Dataflow could not run fails here: a stage missing, a local absolute data path baked into a
DoFn (it would not exist on a worker), the package not staged. Needs the `apache-beam[gcp]` extra.
"""
import base64
import bz2
import json
import re
import time

import pytest

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs apache-beam[gcp]")

import apache_beam as beam  # noqa: E402
from apache_beam.internal import pickler  # noqa: E402
from apache_beam.io.filesystem import FileMetadata, MatchResult  # noqa: E402
from apache_beam.io.gcp import gcsfilesystem  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions  # noqa: E402
from apache_beam.portability.api import beam_runner_api_pb2  # noqa: E402

from pipelines.options import TiplineOptions  # noqa: E402
from pipelines.tipline_pipeline import build_pipeline  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from transforms.geo import _LocateFn  # noqa: E402

BUCKET = "gs://tipline-graph-test"
DATAFLOW = ["--runner", "DataflowRunner", "--dry_run", "True", "--project", "tipline-graph-test",
            "--region", "europe-west1", "--temp_location", f"{BUCKET}/tmp", "--setup_file", str(REPO / "setup.py"),
            "--output", f"{BUCKET}/out"]
SOURCES = {
    "pubsub": ["--source", "pubsub", "--subscription", "projects/tipline-graph-test/subscriptions/tips",
               "--streaming"],
    "files": ["--source", "files", "--input", f"{BUCKET}/reports/*.jsonl"],
}
STAGES = ("ReadReports", "ParseReports", "DedupRedeliveries", "EnrichHashes", "EnrichGeo", "AssignJurisdiction",
          "BuildRoutedRecords", "StampBundleIds", "RouteToSinks", "TrendCounts", "TakedownNotices", "CollectDeadLetters",
          "WriteDeadLetters")
DATA_FILE = re.compile(rb"[\w:/.\-]+\.(?:mmdb|csv|parquet)\b")
PATH_LIKE = re.compile(rb"[\w:/.\-]+")


def fake_gcs_match(self, patterns, limits=None):
    """FAKE, for GCS only: `ReadFromText` checks at construction that its gs:// input matches a file, which
    needs GCS credentials and network. This answers one pretend object per pattern; nothing else in a dry
    run touches GCS."""
    return [MatchResult(pattern, [FileMetadata(pattern.replace("*", "part-0"), 1024, time.time())])
            for pattern in patterns]


def dry_run_graph(source, monkeypatch, extra=()):
    """Builds the job exactly as `run()` configures it, through DataflowRunner's translation; returns the Job."""
    monkeypatch.setattr(gcsfilesystem.GCSFileSystem, "match", fake_gcs_match)
    options = PipelineOptions(DATAFLOW + SOURCES[source] + list(extra))
    options.view_as(SetupOptions).save_main_session = False
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options.view_as(TiplineOptions))
    return pipeline.run().job


@pytest.fixture(scope="module", params=sorted(SOURCES))
def job(request):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return request.param, dry_run_graph(request.param, monkeypatch)


def transforms(job):
    return {t.unique_name: t for t in job.proto_pipeline.components.transforms.values()}


def unpickled(payload):
    """The raw pickle inside one of Beam's pickled payloads (base64 of bz2, its cloudpickle format)."""
    return bz2.decompress(base64.b64decode(payload))


def pickled_payloads(job):
    """Each ParDo's pickled DoFn, unpacked, by step name."""
    payloads = {}
    for name, transform in transforms(job).items():
        if transform.spec.urn == "beam:transform:pardo:v1":
            do_fn = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn
            payloads[name] = unpickled(do_fn.payload)
    return payloads


def local_paths(raw):
    """Absolute local paths in a pickle, except code file names (kept by cloudpickle for tracebacks)."""
    found = []
    for run in PATH_LIKE.findall(raw):
        if b"://" in run or b"/" not in run:
            continue
        path = b"/" + run[run.index(b"/"):].lstrip(b"/")  # drop a pickle length byte that is a letter or /
        if path.count(b"/") >= 2 and not path.endswith(b".py"):
            found.append(path.decode())
    return found


def test_every_stage_is_in_the_graph(job):
    source, job = job
    names = transforms(job)
    assert all(stage in names for stage in STAGES), sorted(set(STAGES) - set(names))
    assert "EnrichGeo/Locate/ParDo(_LocateFn)" in names and "RouteToSinks/WriteRoutedFiles" in names
    if source == "pubsub":
        read = names["ReadReports/ReadFromPubSub/Read"]
        assert read.spec.urn == "beam:transform:pubsub_read:v1"
        assert b"projects/tipline-graph-test/subscriptions/tips" in read.spec.payload
    else:
        assert "ReadReports/ReadLines" in names


def test_job_type_follows_the_source(job):
    source, job = job
    expected = "JOB_TYPE_STREAMING" if source == "pubsub" else "JOB_TYPE_BATCH"
    assert json.loads(job.json())["type"] == expected


def test_demo_data_travels_as_packaged_names(job):
    _, job = job
    payloads = pickled_payloads(job)
    locate = payloads["EnrichGeo/Locate/ParDo(_LocateFn)/ParDo(_LocateFn)"]
    match = payloads["EnrichHashes/MatchBatches/ParDo(MatchHashBatches)"]
    assert set(DATA_FILE.findall(locate)) == {b"packaged:demo-city.mmdb"}
    assert set(DATA_FILE.findall(match)) == {b"packaged:demo-bank.csv", b"packaged:demo-negative-bank.csv"}


def test_no_local_data_path_in_any_step(job):
    """Only code file names (tracebacks) may name this machine's folders; every data path is gs:// or packaged:."""
    _, job = job
    for name, payload in pickled_payloads(job).items():
        assert not local_paths(payload), (name, local_paths(payload))
        assert all(path.startswith((b"packaged:", b"gs:")) for path in DATA_FILE.findall(payload)), name
    assert b"/work/" not in b"".join(t.spec.payload for t in transforms(job).values()
                                     if t.spec.urn != "beam:transform:pardo:v1")


def test_the_check_sees_a_local_path(city_test_db):
    raw = unpickled(pickler.dumps(_LocateFn(city_test_db, None, None)))
    assert local_paths(raw) == [city_test_db]
    assert local_paths(unpickled(pickler.dumps(_LocateFn("packaged:demo-city.mmdb", None, None)))) == []


def test_package_is_staged_for_the_workers(job):
    _, job = job
    staged = {dependency.role_payload for environment in job.proto_pipeline.components.environments.values()
              for dependency in environment.dependencies}
    assert any(b"workflow.tar.gz" in payload for payload in staged)


REFERENCE = f"{BUCKET}/reference"
WORKER_IMAGE = "europe-west1-docker.pkg.dev/tipline-graph-test/tipline/worker:2026-12-01"
PRODUCTION = ["--geoip-city-db", f"{REFERENCE}/GeoIP2-City.mmdb", "--geoip-asn-db", f"{REFERENCE}/GeoLite2-ASN.mmdb",
              "--geoip-anonymous-db", f"{REFERENCE}/GeoIP2-Anonymous-IP.mmdb",
              "--hash-bank", f"{REFERENCE}/known.parquet", "--negative-hash-bank", f"{REFERENCE}/benign.csv",
              "--sdk_container_image", WORKER_IMAGE]


def test_real_reference_data_travels_as_gs_paths_with_the_worker_image(monkeypatch):
    """The README's production launch: every database and bank a gs:// path read on the workers, which run
    the tipline image."""
    job = dry_run_graph("files", monkeypatch, PRODUCTION)
    payloads = pickled_payloads(job)
    locate = payloads["EnrichGeo/Locate/ParDo(_LocateFn)/ParDo(_LocateFn)"]
    match = payloads["EnrichHashes/MatchBatches/ParDo(MatchHashBatches)"]
    for name in ("GeoIP2-City.mmdb", "GeoLite2-ASN.mmdb", "GeoIP2-Anonymous-IP.mmdb"):
        assert f"{REFERENCE}/{name}".encode() in locate, name
    assert f"{REFERENCE}/known.parquet".encode() in match and f"{REFERENCE}/benign.csv".encode() in match
    assert len(DATA_FILE.findall(locate)) == 3 and len(DATA_FILE.findall(match)) == 2
    assert not any(b"packaged:" in payload for payload in payloads.values())
    images = {beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
              for environment in job.proto_pipeline.components.environments.values()
              if environment.urn == "beam:env:docker:v1"}
    assert images == {WORKER_IMAGE}


def test_a_dataflow_submission_prints_the_job_id_region_and_console_url():
    from google.cloud import dataflow as dataflow_api
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    from pipelines.submission import submission_lines

    job = dataflow_api.Job(id="2026-12-01_10_00_00-1234", location="europe-west1", project_id="tipline-prod")
    lines = submission_lines("DataflowRunner", DataflowPipelineResult(job, None), PipelineOptions(DATAFLOW))
    assert lines[0] == "submitted Dataflow job 2026-12-01_10_00_00-1234 in europe-west1 (project tipline-prod)"
    assert lines[1] == ("console: https://console.cloud.google.com/dataflow/jobs/europe-west1/"
                        "2026-12-01_10_00_00-1234?project=tipline-prod")


def test_tipline_run_on_dataflow_says_what_it_did(capsys):
    """`tipline run` itself, on the DataflowRunner with --dry_run: translated, nothing submitted, and it says so
    (the gs:// databases are not opened on the launching machine)."""
    from pipelines.tipline_pipeline import run

    assert run(DATAFLOW + SOURCES["pubsub"] + PRODUCTION) is None
    assert capsys.readouterr().out.strip().endswith("no Dataflow job was started: dry run")
