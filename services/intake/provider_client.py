"""A provider's client for the CyberTipline reporting API, written from its public description.

What an existing provider integration sends: HTTP Basic on every call; `POST /submit` and `POST /fileinfo`
with `text/xml; charset=utf-8` documents; `POST /upload` as multipart `id` + `file`; `POST /finish` and
`POST /retract` as the form field `id`; every answer an XML document with `responseCode` (0 = success).
Used by the tests, the benchmark and the scripted provider of `tipline demo --pubsub`.
"""
import xml.etree.ElementTree as ElementTree
from xml.sax.saxutils import escape

import httpx

XML = {"Content-Type": "text/xml; charset=utf-8"}


class ApiError(Exception):
    def __init__(self, code, description, status):
        super().__init__(f"{code}: {description} (HTTP {status})")
        self.code, self.description, self.status = code, description, status


def parse_response(response):
    """{element: text} of a reportResponse / reportDoneResponse (fileId repeated under files: a list)."""
    root = ElementTree.fromstring(response.content)
    fields = {"root": root.tag, "fileIds": [element.text for element in root.iter("fileId")]}
    fields.update({child.tag: child.text for child in root if child.tag != "files"})
    fields["responseCode"] = int(fields["responseCode"])
    return fields


class CyberTiplineClient:
    def __init__(self, base_url, user, password, http=None):
        self.http = http or httpx.Client(base_url=base_url, auth=(user, password), timeout=60)

    def close(self):
        self.http.close()

    def _checked(self, response):
        fields = parse_response(response)
        if fields["responseCode"] != 0:
            raise ApiError(fields["responseCode"], fields.get("responseDescription"), response.status_code)
        return fields

    def status(self):
        return self._checked(self.http.get("/status"))

    def submit(self, report_xml):
        return int(self._checked(self.http.post("/submit", content=report_xml, headers=XML))["reportId"])

    def upload(self, report_id, name, data):
        fields = self._checked(self.http.post("/upload", data={"id": str(report_id)}, files={"file": (name, data)}))
        return fields["fileId"], fields["hash"]

    def fileinfo(self, details_xml):
        return self._checked(self.http.post("/fileinfo", content=details_xml, headers=XML))

    def finish(self, report_id):
        return self._checked(self.http.post("/finish", data={"id": str(report_id)}))

    def retract(self, report_id):
        return self._checked(self.http.post("/retract", data={"id": str(report_id)}))


def report_xml(incident_type="Child Pornography (possession, manufacture, and distribution)",
               incident_time="2026-11-23T09:58:00Z", ip="81.2.69.142", screen_name="example_name",
               user_id="user-88121", url="https://files.example.net/a/b.jpg", reporter_email="safety@example.net"):
    """A `report` document as a provider sends it."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<report xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="https://report.cybertip.org/ispws/xsd">
  <incidentSummary>
    <incidentType>{escape(incident_type)}</incidentType>
    <platform>ExampleSocial web</platform>
    <reportAnnotations><sextortion/><minorToMinorInteraction/></reportAnnotations>
    <incidentDateTime>{incident_time}</incidentDateTime>
  </incidentSummary>
  <internetDetails><webPageIncident thirdPartyHostedContent="false"><url>{escape(url)}</url></webPageIncident></internetDetails>
  <reporter>
    <reportingPerson><firstName>Sam</firstName><lastName>Safety</lastName><email>{escape(reporter_email)}</email></reportingPerson>
    <companyTemplate>standard</companyTemplate>
  </reporter>
  <personOrUserReported>
    <espIdentifier>{escape(user_id)}</espIdentifier>
    <screenName>{escape(screen_name)}</screenName>
    <ipCaptureEvent><ipAddress>{ip}</ipAddress><eventName>Login</eventName><dateTime>2026-11-20T18:00:00Z</dateTime><possibleProxy>false</possibleProxy></ipCaptureEvent>
    <estimatedLocation verified="false"><countryCode>GB</countryCode></estimatedLocation>
  </personOrUserReported>
  <victim><victimPerson><age>13</age></victimPerson></victim>
</report>""".encode("utf-8")


def file_details_xml(report_id, file_id, md5, ip="81.2.69.142", viewed=True, public=True,
                     location="https://files.example.net/a/b.jpg"):
    """A `fileDetails` document for an uploaded file."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<fileDetails>
  <reportId>{report_id}</reportId>
  <fileId>{file_id}</fileId>
  <originalFileName>b.jpg</originalFileName>
  <locationOfFile>{escape(location)}</locationOfFile>
  <fileViewedByEsp>{str(viewed).lower()}</fileViewedByEsp>
  <exifViewedByEsp>false</exifViewedByEsp>
  <publiclyAvailable>{str(public).lower()}</publiclyAvailable>
  <fileAnnotations><viral/></fileAnnotations>
  <industryClassification>A1</industryClassification>
  <originalFileHash hashType="MD5">{md5}</originalFileHash>
  <ipCaptureEvent><ipAddress>{ip}</ipAddress><eventName>Upload</eventName><dateTime>2026-11-23T09:57:40Z</dateTime><possibleProxy>false</possibleProxy><port>51234</port></ipCaptureEvent>
</fileDetails>""".encode("utf-8")
