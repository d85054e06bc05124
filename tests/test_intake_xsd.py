"""GET /xsd: the schema of the documents the intake takes; the provider client's documents validate against
it and documents the service refuses for their structure do not."""
import httpx
import pytest
import xmlschema

from services.intake.provider_client import file_details_xml, parse_response, report_xml
from tests.test_intake_service import HOSTILE_DOCUMENTS, PASSWORDS, credentials, door  # noqa: F401 - fixtures
from tests.test_pubsub_emulator import pubsub  # noqa: F401 - pubsub is a fixture

REFUSED_FOR_STRUCTURE = ("wrong root", "no incident type", "unknown incident type", "no UTC offset")


@pytest.fixture
def served_schema(door):
    service, _, _ = door
    response = httpx.get(f"{service.url}/xsd", auth=("esp-17", PASSWORDS["esp-17"]))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    assert parse_response(httpx.get(f"{service.url}/xsd"))["responseCode"] == 2000  # credentials, like every call
    return service, xmlschema.XMLSchema(response.text)


def test_the_documents_a_provider_client_sends_validate_and_the_service_takes_them(served_schema):
    service, schema = served_schema
    auth, xml = ("esp-17", PASSWORDS["esp-17"]), {"Content-Type": "text/xml"}
    document = report_xml(incident_type="Child Sex Trafficking", incident_time="2026-11-23T09:58:00+02:00")
    schema.validate(document)
    answer = parse_response(httpx.post(f"{service.url}/submit", content=document, headers=xml, auth=auth))
    assert answer["responseCode"] == 0
    details = file_details_xml(answer["reportId"], 1, "0" * 32)
    schema.validate(details)
    assert parse_response(httpx.post(f"{service.url}/fileinfo", content=details, headers=xml,
                                     auth=auth))["responseCode"] == 5002  # valid; there is no file 1 yet


@pytest.mark.parametrize("name", REFUSED_FOR_STRUCTURE)
def test_documents_refused_for_their_structure_fail_the_schema(served_schema, name):
    _, schema = served_schema
    document, _, code, _ = HOSTILE_DOCUMENTS[name]
    assert code == 4100 and not schema.is_valid(document)


EVENT = b"<ipCaptureEvent><ipAddress>81.2.69.142</ipAddress>%s</ipCaptureEvent>"


@pytest.mark.parametrize("wrong", [b"<possibleProxy>maybe</possibleProxy>", b"<port>70000</port>",
                                   b"<eventName>Lunch</eventName>"])
def test_file_details_with_values_the_service_refuses_fail_the_schema(served_schema, wrong):
    service, schema = served_schema
    valid = file_details_xml(1, 1, "0" * 32)
    event = valid[valid.index(b"<ipCaptureEvent>"):valid.index(b"</ipCaptureEvent>") + len(b"</ipCaptureEvent>")]
    assert schema.is_valid(valid.replace(event, EVENT % b"<eventName>Upload</eventName><port>1</port>"))
    document = valid.replace(event, EVENT % wrong)
    assert not schema.is_valid(document)
    answer = parse_response(httpx.post(f"{service.url}/fileinfo", content=document,
                                       headers={"Content-Type": "text/xml"}, auth=("esp-17", PASSWORDS["esp-17"])))
    assert answer["responseCode"] == 4100
