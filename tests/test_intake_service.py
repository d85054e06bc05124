"""The intake service over real HTTP (uvicorn on 127.0.0.1) with a provider client written from the API's
description, publishing to the Pub/Sub emulator; the pipeline then routes what it published."""
import base64
import hashlib
import json
import os
import pathlib
import stat
import time

import fastavro
import httpx
import pytest

from pipelines import emulator
from pipelines.publish import ensure_subscription, ensure_topic
from services.common.background import BackgroundServer
from services.common.credentials import add_account
from services.intake.app import IntakeConfig, create_app
from services.intake.provider_client import ApiError, CyberTiplineClient, file_details_xml, parse_response, report_xml
from services.intake.xml_mapping import MAX_DEPTH
from tests.test_pipeline_end_to_end import benign_jpeg
from tests.test_pubsub_emulator import pubsub, pull_all  # noqa: F401 - pubsub is a fixture

pytestmark = pytest.mark.emulator
PROJECT = "tipline-intake-test"
PASSWORDS = {"esp-17": "correct horse battery staple", "esp-42": "another provider's secret"}


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    path = tmp_path_factory.mktemp("accounts") / "providers.jsonl"
    add_account(path, "esp-17", "ExampleSocial", PASSWORDS["esp-17"])
    add_account(path, "esp-42", "OtherChat", PASSWORDS["esp-42"])
    return path


class RunningService(BackgroundServer):
    """The intake on a background uvicorn, with its state (`intake`) at hand."""

    def __init__(self, config):
        super().__init__(create_app(config))
        self.intake = self.app.state.intake


@pytest.fixture
def door(pubsub, credentials, tmp_path, request):
    """A running service on a fresh topic; yields (service, subscription, config)."""
    from google.cloud import pubsub_v1

    from services.common.credentials import load_accounts

    name = f"tips-{request.node.name[:40].replace('[', '-').replace(']', '')}-{os.getpid()}"
    topic, subscription = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}"
    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    config = IntakeConfig(store_path=str(tmp_path / "intake.sqlite"), quarantine_root=str(tmp_path / "quarantine"),
                          accounts=load_accounts(credentials), topic=topic, max_upload_bytes=256 * 1024,
                          max_files_per_report=3, max_document_bytes=64 * 1024, outbox_seconds=1,
                          outbox_after_seconds=0)
    with RunningService(config) as service:
        yield service, subscription, config


def client(service, user="esp-17", password=None):
    return CyberTiplineClient(service.url, user, password or PASSWORDS[user])


def contract_id(service, number):
    return service.intake.store.contract_report_id(number)


def report_through_the_door(provider, image, ip="81.2.69.142"):
    """submit -> upload -> fileinfo -> finish, as a provider's integration does it; the numeric report id."""
    report_id = provider.submit(report_xml(ip=ip))
    file_id, md5 = provider.upload(report_id, "b.jpg", image)
    provider.fileinfo(file_details_xml(report_id, file_id, md5, ip=ip))
    done = provider.finish(report_id)
    assert done["root"] == "reportDoneResponse" and done["fileIds"] == [file_id]
    return report_id, file_id, md5


def test_a_report_reaches_the_topic_only_at_finish_with_its_files_in_quarantine(door):
    service, subscription, config = door
    provider = client(service)
    assert provider.status()["responseCode"] == 0
    image = benign_jpeg(5)
    report_id = provider.submit(report_xml())
    file_id, md5 = provider.upload(report_id, "b.jpg", image)
    assert md5 == hashlib.md5(image).hexdigest()
    provider.fileinfo(file_details_xml(report_id, file_id, md5))
    assert pull_all(subscription) == []  # submitted, uploaded, described: nothing published yet

    provider.finish(report_id)
    [message] = pull_all(subscription)
    report = json.loads(message.data)
    assert dict(message.attributes) == {"reportId": contract_id(service, report_id),
                                        "submittedAt": report["submittedAt"]}
    assert report["reporter"]["espId"] == "esp-17" and report["reporter"]["espName"] == "ExampleSocial"
    assert report["reporter"]["kind"] == "esp"
    assert report["incidentSummary"]["reportAnnotations"] == ["sextortion", "minorToMinorInteraction"]
    assert report["internetDetails"] == [{"kind": "webPage", "url": "https://files.example.net/a/b.jpg"}]
    assert report["personOrUserReported"]["ipCaptureEvents"][0]["ipAddress"] == "81.2.69.142"
    assert report["victims"] == [{"ageEstimate": 13}]
    [file] = report["files"]
    assert file["fileId"] == file_id and file["fileViewedByEsp"] is True and file["industryClassification"] == "A1"
    assert file["originalFileHashes"] == [{"hashType": "MD5", "value": md5}]
    assert file["content"] is None
    sha256 = hashlib.sha256(image).hexdigest()
    assert file["contentUri"] == os.path.join(os.path.realpath(config.quarantine_root), sha256[:2], sha256)
    with open(file["contentUri"], "rb") as stored:
        assert stored.read() == image
    assert stat.S_IMODE(os.stat(file["contentUri"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(file["contentUri"])).st_mode) == 0o700
    from transforms.reports.validation import ReportValidator

    ReportValidator().validate(report)


def test_finish_twice_retract_after_finish_and_finish_after_retract_are_refused(door):
    service, subscription, _ = door
    provider = client(service)
    finished, _, _ = report_through_the_door(provider, benign_jpeg(1))
    for call in (provider.finish, provider.retract):
        with pytest.raises(ApiError) as refused:
            call(finished)
        assert refused.value.code == 5102 and refused.value.status == 409
    retracted = provider.submit(report_xml())
    provider.upload(retracted, "x.jpg", benign_jpeg(2))
    provider.retract(retracted)
    for call in (provider.finish, provider.retract):
        with pytest.raises(ApiError) as refused:
            call(retracted)
        assert refused.value.code == 5101
    with pytest.raises(ApiError) as refused:
        provider.upload(retracted, "y.jpg", benign_jpeg(3))
    assert refused.value.code == 5101
    with pytest.raises(ApiError) as refused:
        provider.fileinfo(file_details_xml(retracted, 1, "0" * 32))
    assert refused.value.code == 5101
    assert [json.loads(m.data)["reportId"] for m in pull_all(subscription)] == [contract_id(service, finished)]


def test_the_store_refuses_each_change_to_a_report_that_is_not_the_providers_open_one(tmp_path):
    """The store's own checks, for what reaches it past the endpoints' early ones (a concurrent finish)."""
    from services.intake.store import IntakeStore, Refused

    store = IntakeStore(str(tmp_path / "intake.sqlite"))
    report = store.open_report("esp-17", {})
    file_id = store.add_file("esp-17", report, "0" * 32, "/q/aa/a", "a.jpg", max_files=2)
    store.add_file("esp-17", report, "1" * 32, "/q/bb/b", "b.jpg", max_files=2)
    finished = store.open_report("esp-17", {})
    store.finish("esp-17", finished, "Example")
    refusals = {
        "full": lambda: store.add_file("esp-17", report, "2" * 32, "/q/cc/c", "c.jpg", max_files=2),
        "another provider's": lambda: store.add_file("esp-42", report, "2" * 32, "/q/cc/c", None, max_files=9),
        "finished": lambda: store.add_file("esp-17", finished, "2" * 32, "/q/cc/c", None, max_files=9),
        "unknown": lambda: store.add_file("esp-17", report + 99, "2" * 32, "/q/cc/c", None, max_files=9),
        "details, another provider's": lambda: store.set_file_details("esp-42", report, file_id, {}),
        "details, finished": lambda: store.set_file_details("esp-17", finished, file_id, {}),
        "details, no such file": lambda: store.set_file_details("esp-17", report, file_id + 99, {}),
    }
    codes = {}
    for name, change in refusals.items():
        with pytest.raises(Refused) as refused:
            change()
        codes[name] = refused.value.code
    assert codes == {"full": 4220, "another provider's": 3000, "finished": 5102, "unknown": 5001,
                     "details, another provider's": 3000, "details, finished": 5102, "details, no such file": 5002}
    store.set_file_details("esp-17", report, file_id, {"fileName": "a.jpg"})
    message, file_ids = store.finish("esp-17", report, "Example")
    assert file_ids == [file_id, file_id + 1] and json.loads(message)["files"][0]["fileName"] == "a.jpg"


def test_another_providers_report_and_unknown_ids_are_refused(door):
    service, subscription, _ = door
    owner, other = client(service), client(service, "esp-42")
    report_id = owner.submit(report_xml())
    file_id, md5 = owner.upload(report_id, "mine.jpg", benign_jpeg(4))
    for call, code in ((lambda: other.upload(report_id, "a.jpg", b"bytes"), 3000),
                       (lambda: other.fileinfo(file_details_xml(report_id, file_id, md5)), 3000),
                       (lambda: other.finish(report_id), 3000), (lambda: other.retract(report_id), 3000),
                       (lambda: owner.finish(report_id + 1000), 5001),
                       (lambda: owner.fileinfo(file_details_xml(report_id, 999, "0" * 32)), 5002),
                       (lambda: owner.upload("not-a-number", "a.jpg", b"bytes"), 4000)):
        with pytest.raises(ApiError) as refused:
            call()
        assert refused.value.code == code, refused.value
    assert pull_all(subscription) == []


def test_bad_credentials_get_the_same_answer_whether_the_provider_exists_or_not(door):
    service, subscription, _ = door
    answers = []
    for auth in (("esp-17", "wrong password"), ("no-such-provider", "wrong password"), None):
        response = httpx.get(f"{service.url}/status", auth=auth)
        answers.append((response.status_code, response.headers.get("www-authenticate"), response.content))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 401 and parse_response(httpx.get(f"{service.url}/status"))["responseCode"] == 2000
    response = httpx.post(f"{service.url}/submit", content=report_xml(), headers={"Content-Type": "text/xml"},
                          auth=("esp-17", "wrong password"))
    assert parse_response(response)["responseCode"] == 2000
    assert pull_all(subscription) == []


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<report><incidentSummary><incidentType>&lol3;</incidentType></incidentSummary></report>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE report [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<report><incidentSummary><incidentType>&secret;</incidentType></incidentSummary></report>"""
HOSTILE_DOCUMENTS = {
    "billion laughs": (BILLION_LAUGHS, "text/xml", 4110, "DTDs and entities are not accepted"),
    "external entity": (EXTERNAL_ENTITY, "text/xml", 4110, "DTDs and entities are not accepted"),
    "deeply nested": (b"<report>" + b"<a>" * (MAX_DEPTH + 5) + b"</a>" * (MAX_DEPTH + 5) + b"</report>", "text/xml",
                      4110, "nested deeper"),
    "huge": (b"<report>" + b"<a>x</a>" * 20_000 + b"</report>", "text/xml", 4120, "exceeds the limit"),
    "not UTF-8": (report_xml().replace(b"Sam", "S\u00e4m".encode("latin-1")), "text/xml", 4110, "not UTF-8"),
    "declared Latin-1": (b'<?xml version="1.0" encoding="ISO-8859-1"?><report/>', "text/xml", 4110, "only UTF-8"),
    "not well-formed": (b"<report><incidentSummary></report>", "text/xml", 4110, "not well-formed"),
    "wrong content type": (report_xml(), "application/json", 4000, "not text/xml"),
    "wrong root": (b"<fileDetails/>", "text/xml", 4100, "expected <report>"),
    "no incident type": (b"<report><incidentSummary/></report>", "text/xml", 4100, "incidentType is required"),
    "unknown incident type": (report_xml(incident_type="Something Else"), "text/xml", 4100, "unknown incident type"),
    "no UTC offset": (report_xml(incident_time="2026-11-23T09:58:00"), "text/xml", 4100, "no UTC offset"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_DOCUMENTS))
def test_hostile_documents_are_refused_with_their_code_and_publish_nothing(door, name):
    service, subscription, _ = door
    document, content_type, code, reason = HOSTILE_DOCUMENTS[name]
    response = httpx.post(f"{service.url}/submit", content=document, headers={"Content-Type": content_type},
                          auth=("esp-17", PASSWORDS["esp-17"]))
    answer = parse_response(response)
    assert answer["responseCode"] == code and reason in answer["responseDescription"]
    assert response.status_code in (400, 413)
    assert client(service).status()["responseCode"] == 0  # still serving
    assert pull_all(subscription) == []


def test_uploads_over_the_size_limit_or_the_file_count_are_refused(door):
    service, subscription, config = door
    provider = client(service)
    report_id = provider.submit(report_xml())
    with pytest.raises(ApiError) as refused:
        provider.upload(report_id, "big.bin", os.urandom(config.max_upload_bytes + 1))
    assert refused.value.code == 4210 and refused.value.status == 413
    for index in range(config.max_files_per_report):
        provider.upload(report_id, f"{index}.jpg", benign_jpeg(index))
    with pytest.raises(ApiError) as refused:
        provider.upload(report_id, "one-too-many.jpg", benign_jpeg(99))
    assert refused.value.code == 4220
    provider.finish(report_id)
    [message] = pull_all(subscription)
    assert len(json.loads(message.data)["files"]) == config.max_files_per_report


def test_a_flood_from_one_provider_is_rate_limited_and_others_go_on(door):
    from services.common.rate_limit import RateLimiter

    service, _, _ = door
    service.intake.provider_limits = RateLimiter(rate=0.001, burst=3)
    flooder, other = client(service), client(service, "esp-42")
    codes = []
    for _ in range(5):
        response = flooder.http.get("/status")
        codes.append((response.status_code, parse_response(response)["responseCode"]))
    assert codes == [(200, 0)] * 3 + [(429, 4290)] * 2
    assert other.status()["responseCode"] == 0


def test_open_reports_survive_a_restart_of_the_service(door):
    service, subscription, config = door
    report_id = client(service).submit(report_xml())
    file_id, md5 = client(service).upload(report_id, "b.jpg", benign_jpeg(7))
    service.__exit__(None, None, None)
    with RunningService(config) as restarted:
        provider = client(restarted)
        provider.fileinfo(file_details_xml(report_id, file_id, md5))
        provider.finish(report_id)
        [message] = pull_all(subscription)
        assert json.loads(message.data)["reportId"] == contract_id(restarted, report_id)
        assert contract_id(restarted, report_id) == contract_id(service, report_id)  # the store's instance id kept
        with pytest.raises(ApiError):
            provider.finish(report_id)


def unreachable_publisher():
    """The real client pointed at a port nothing listens on, giving up after a few seconds."""
    from google.api_core.retry import Retry
    from google.cloud import pubsub_v1

    previous = os.environ["PUBSUB_EMULATOR_HOST"]
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{emulator.free_port()}"
    try:
        return pubsub_v1.PublisherClient(publisher_options=pubsub_v1.types.PublisherOptions(
            retry=Retry(initial=0.1, maximum=0.5, timeout=3), timeout=3))
    finally:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous


def wait_for_messages(subscription, count, patience=120):
    messages, deadline = [], time.monotonic() + patience
    while len(messages) < count and time.monotonic() < deadline:
        messages += pull_all(subscription)
        time.sleep(0.5)
    return messages


def test_a_report_finished_while_pubsub_is_unreachable_is_published_by_the_outbox(door):
    service, subscription, _ = door
    real = service.intake.publisher
    service.intake.publisher = unreachable_publisher()
    report_id, _, _ = report_through_the_door(client(service), benign_jpeg(8))
    assert service.intake.store.state_of(report_id) == ("finished", 0)
    service.intake.publisher = real
    messages = wait_for_messages(subscription, 1)
    assert [json.loads(m.data)["reportId"] for m in messages] == [contract_id(service, report_id)]
    deadline = time.monotonic() + 60  # confirmed publishes are recorded together, a moment later
    while service.intake.store.state_of(report_id) != ("finished", 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.intake.store.state_of(report_id) == ("finished", 1)


def test_json_and_public_reports_enter_the_same_stream(door):
    from tests.conftest import example_report

    service, subscription, config = door
    image = benign_jpeg(11)
    direct = example_report()
    direct["reporter"] = {"espId": "esp-17"}
    direct["files"][0].update(content=base64.b64encode(image).decode(), contentUri=None)
    auth = ("esp-17", PASSWORDS["esp-17"])
    answer = httpx.post(f"{service.url}/v1/reports", json=direct, auth=auth).json()
    assert answer == {"responseCode": 0, "reportId": direct["reportId"]}
    again = httpx.post(f"{service.url}/v1/reports", json=direct, auth=auth)
    assert again.status_code == 409 and again.json()["responseCode"] == 5102
    as_other = httpx.post(f"{service.url}/v1/reports", json={**direct, "reportId": "x-2"},
                          auth=("esp-42", PASSWORDS["esp-42"]))
    assert as_other.json()["responseCode"] == 3000
    with_uri = {**direct, "reportId": "x-3", "files": [{**direct["files"][0], "content": None,
                                                         "contentUri": "/etc/passwd"}]}
    assert httpx.post(f"{service.url}/v1/reports", json=with_uri, auth=auth).json()["responseCode"] == 4100

    public = {"incidentSummary": {"incidentType": "Online Enticement of Children for Sexual Acts"},
              "reporter": {"reportingPerson": {"firstName": "Pat", "email": "pat@example.org"}},
              "personOrUserReported": {"screenName": "someone", "ipCaptureEvents": [
                  {"ipAddress": "216.160.83.56", "eventName": "Login"}]}}
    answer = httpx.post(f"{service.url}/public/report", json=public).json()
    assert answer["responseCode"] == 0 and answer["reportId"].startswith("IN-")
    with_media = {**public, "files": [{"content": base64.b64encode(image).decode()}]}
    assert httpx.post(f"{service.url}/public/report", json=with_media).json()["responseCode"] == 4100
    not_json = httpx.post(f"{service.url}/public/report", content=b"\xff\xfe",
                          headers={"Content-Type": "application/json"})
    assert not_json.json()["responseCode"] == 4100

    messages = {json.loads(m.data)["reportId"]: json.loads(m.data) for m in pull_all(subscription)}
    assert set(messages) == {direct["reportId"], answer["reportId"]}
    stored = messages[direct["reportId"]]["files"][0]
    assert stored["content"] is None and open(stored["contentUri"], "rb").read() == image
    reporter = messages[answer["reportId"]]["reporter"]
    assert reporter == {"kind": "public", "reportingPerson": {"firstName": "Pat", "email": "pat@example.org"}}


def test_the_pipeline_routes_what_the_door_published(door, tmp_path, city_test_db):
    from pipelines.tipline_pipeline import run

    service, subscription, config = door
    image = benign_jpeg(21)
    report_id, _, md5 = report_through_the_door(client(service), image, ip="216.160.83.56")
    public = {"incidentSummary": {"incidentType": "Child Sex Trafficking"},
              "reporter": {"reportingPerson": {"email": "pat@example.org", "phone": "+1 555 0100"}},
              "personOrUserReported": {"ipCaptureEvents": [{"ipAddress": "81.2.69.160", "eventName": "Login"}]}}
    public_image = benign_jpeg(22)
    public_id = httpx.post(f"{service.url}/public/report", data={"report": json.dumps(public)},
                           files=[("file", ("seen.jpg", public_image))]).json()["reportId"]
    (tmp_path / "pulled.jsonl").write_bytes(b"\n".join(m.data for m in pull_all(subscription)) + b"\n")
    summary = run(["--source", "files", "--input", str(tmp_path / "pulled.jsonl"), "--output", str(tmp_path / "out"),
                   "--geoip-city-db", city_test_db, "--media-root", config.quarantine_root, "--demo-data"])
    assert (summary["read"], summary["routed"], summary["dead_lettered"]) == (2, 2, 0)
    records = {}
    for path in (tmp_path / "out" / "routed").rglob("*.avro"):
        with path.open("rb") as handle:
            records.update({record["reportId"]: record for record in fastavro.reader(handle)})
    door_record, public_record = records[contract_id(service, report_id)], records[public_id]
    assert door_record["jurisdiction"] == "US-WA" and door_record["espId"] == "esp-17"
    assert door_record["reporterKind"] == "esp"
    [file] = door_record["files"]
    assert file["mediaStatus"] == "hashed"
    assert {"signalType": "MD5", "value": md5, "source": "computed"}.items() <= next(
        h for h in file["hashes"] if h["source"] == "computed" and h["signalType"] == "MD5").items()
    assert public_record["jurisdiction"] == "GB"
    [public_file] = public_record["files"]
    assert public_file["mediaStatus"] == "hashed"  # read from the quarantine root given as --media-root
    assert {"signalType": "MD5", "value": hashlib.md5(public_image).hexdigest(), "source": "computed"}.items() <= next(
        h for h in public_file["hashes"] if h["source"] == "computed" and h["signalType"] == "MD5").items()
    assert (public_record["reporterKind"], public_record["espId"]) == ("public", "public")
    everything = b"".join(path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()
                          and "dead_letter" not in path.parts)
    for secret in (b"pat@example.org", b"555 0100", b"quarantine", b"safety@example.net"):
        assert secret not in everything


def test_the_demo_door_reports_through_the_service(pubsub):
    from google.cloud import pubsub_v1

    from pipelines.demo_door import DOOR_PROVIDER, intake_door

    topic, subscription = f"projects/{PROJECT}/topics/demo-door", f"projects/{PROJECT}/subscriptions/demo-door"
    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    with intake_door(topic, seconds=3, rate=2) as outcome:
        pass
    assert outcome["finished"] >= 1 and outcome["failed"] == 0, outcome
    reports = [json.loads(message.data) for message in wait_for_messages(subscription, outcome["finished"] + 1)]
    assert sum(report["reporter"].get("espId") == DOOR_PROVIDER for report in reports) == outcome["finished"]
    assert [report["reportId"] for report in reports if report["reporter"]["kind"] == "public"] == [outcome["public"]]


def test_serve_intake_refuses_a_misconfiguration_naming_the_flag(tmp_path, capsys):
    from pipelines.cli import main

    def refusal(*argv):
        assert main(["serve", "intake", *argv]) == 2
        (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert line.startswith("tipline serve: error: ")
        return line

    assert "--credentials: credentials file" in refusal("--credentials", str(tmp_path / "none.jsonl"), "--project", "p",
                                                        "--topic", "t")
    (tmp_path / "bad.jsonl").write_text('{"user": "x"}\n')
    assert "bad.jsonl line 1" in refusal("--credentials", str(tmp_path / "bad.jsonl"), "--project", "p", "--topic", "t")
    assert "--project and --topic are required" in refusal("--credentials", str(tmp_path / "bad.jsonl"))
    add_account(tmp_path / "good.jsonl", "esp-9", "Example", "a password")
    assert refusal("--credentials", str(tmp_path / "good.jsonl"), "--project", "p", "--topic", "t",
                   "--publish-batch-ms", "0").endswith("--publish-batch-ms must be positive")


def test_add_provider_stores_only_a_hash_owner_only(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main
    from services.common.credentials import BasicAuthenticator, load_accounts

    path = tmp_path / "providers.jsonl"
    monkeypatch.setenv("TIPLINE_PROVIDER_PASSWORD", "s3cret-provider-password")
    assert main(["serve", "intake", "--credentials", str(path), "--add-provider", "esp-9"]) == 0
    assert "s3cret" not in capsys.readouterr().out and b"s3cret" not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["serve", "intake", "--credentials", str(path), "--add-provider", "esp-9"]) == 2
    authenticator = BasicAuthenticator(load_accounts(path))
    header = "Basic " + base64.b64encode(b"esp-9:s3cret-provider-password").decode()
    assert authenticator.user_of(header) == "esp-9" and authenticator.remembered_user(header) == "esp-9"
    assert authenticator.user_of("Basic " + base64.b64encode(b"esp-9:wrong").decode()) is None


def test_a_failure_inside_the_service_answers_1000_and_the_service_goes_on(door):
    service, subscription, _ = door
    provider = client(service)
    report_id = provider.submit(report_xml())
    image = benign_jpeg(30)
    blocker = pathlib.Path(service.intake.quarantine.root, hashlib.sha256(image).hexdigest()[:2])
    blocker.write_bytes(b"a file where the store needs a folder")  # the quarantine store cannot write this image
    with pytest.raises(ApiError) as failed:
        provider.upload(report_id, "b.jpg", image)
    assert failed.value.code == 1000 and failed.value.status == 500
    assert "not taken" in failed.value.description
    blocker.unlink()
    provider.upload(report_id, "b.jpg", image)
    provider.finish(report_id)
    [message] = pull_all(subscription)
    assert len(json.loads(message.data)["files"]) == 1  # the failed upload left no file behind


def test_a_public_report_may_attach_files_within_the_limits(door):
    service, subscription, config = door
    report = {"incidentSummary": {"incidentType": "Child Sex Trafficking"},
              "files": [{"fileId": "1", "locationOfFile": "https://files.example.net/x"}]}
    images = [benign_jpeg(40), benign_jpeg(41)]

    def send(files, address_report=report):
        return httpx.post(f"{service.url}/public/report", data={"report": json.dumps(address_report)},
                          files=[("file", (f"{index}.jpg", data)) for index, data in enumerate(files)]).json()

    answer = send(images)
    assert answer["responseCode"] == 0
    assert send([os.urandom(config.max_upload_bytes + 1)])["responseCode"] == 4210
    assert send(images * 2)["responseCode"] == 4220  # 4 uploads; 3 files a report
    assert send([*images, benign_jpeg(42)])["responseCode"] == 4220  # 3 uploads and a file given by location
    assert send([b""])["responseCode"] == 4200
    [message] = pull_all(subscription)
    published = json.loads(message.data)
    assert published["reportId"] == answer["reportId"] and published["reporter"] == {"kind": "public"}
    located, *attached = published["files"]
    assert located["locationOfFile"] == "https://files.example.net/x" and not located.get("contentUri")
    for file, data in zip(attached, images, strict=True):
        sha256 = hashlib.sha256(data).hexdigest()
        assert file["contentUri"] == os.path.join(os.path.realpath(config.quarantine_root), sha256[:2], sha256)
        assert not file.get("content") and open(file["contentUri"], "rb").read() == data
        assert stat.S_IMODE(os.stat(file["contentUri"]).st_mode) == 0o600


def test_public_reports_are_rate_limited_per_address(door):
    service, subscription, config = door
    service.intake.public_limits = service.intake.buckets.limiter("public", rate=0.001, burst=5)  # no refill
    report = {"incidentSummary": {"incidentType": "Child Sex Trafficking"}}
    codes = [httpx.post(f"{service.url}/public/report", data={"report": json.dumps(report)},
                        files=[("file", ("a.jpg", benign_jpeg(50)))]).json()["responseCode"] for _ in range(7)]
    assert codes[:5] == [0] * 5 and codes[5:] == [4290, 4290]
    assert len(pull_all(subscription)) == 5
