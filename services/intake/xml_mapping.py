"""CyberTipline reporting-API XML (`report`, `fileDetails`) to the contract's JSON, parsed safely.

Documents are parsed with expat refusing any DTD or entity declaration (defusedxml's forbid_dtd,
forbid_entities and forbid_external, with its exceptions), so entity expansion (billion laughs) and
external entities never run; they must be UTF-8, within a size limit and a nesting depth. Element names
follow the public description of the API; elements the contract has no field for are ignored (README).
"""
import re
from datetime import datetime, timezone

from xml.etree.ElementTree import TreeBuilder
from xml.parsers import expat

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

MAX_DEPTH = 24
XML_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
INCIDENT_KINDS = {
    "webPageIncident": "webPage", "emailIncident": "email", "newsgroupIncident": "newsgroup",
    "chatImIncident": "chatIm", "onlineGamingIncident": "onlineGaming", "cellPhoneIncident": "cellPhone",
    "nonInternetIncident": "nonInternet", "peer2peerIncident": "peer2peer",
}
REPORT_ANNOTATIONS = ("sextortion", "csamSolicitation", "minorToMinorInteraction", "spam",
                      "sadisticOnlineExploitation")
FILE_ANNOTATIONS = ("animeDrawingVirtualHentai", "potentialMeme", "viral", "possibleSelfProduction", "physicalHarm",
                    "violenceGore", "bestiality", "liveStreaming", "infant", "generativeAi")
EVENT_NAMES = ("Login", "Registration", "Purchase", "Upload", "Other", "Unknown")
INDUSTRY_CLASSES = ("A1", "A2", "B1", "B2")


class MalformedXml(ValueError):
    """Not a safe, well-formed UTF-8 document (response code 4110)."""


class InvalidDocument(ValueError):
    """Well-formed, but not the document the endpoint takes (response code 4100)."""


def parse_document(data, root_name):
    """The root element of a safe UTF-8 XML document named `root_name`."""
    declared = XML_DECLARED_ENCODING.match(data)
    if declared and declared.group(1).decode("ascii").lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise MalformedXml(f"document declares encoding {declared.group(1).decode('ascii')!r}; only UTF-8 is accepted")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedXml(f"document is not UTF-8: {error.reason} at byte {error.start}") from None
    try:
        root = element_tree(data)
    except DefusedXmlException as error:
        raise MalformedXml(f"document refused: {type(error).__name__} (DTDs and entities are not accepted)") from None
    except expat.ExpatError as error:
        raise MalformedXml(f"document is not well-formed XML: {error}") from None
    if root.tag != root_name:
        raise InvalidDocument(f"root element is <{root.tag[:40]}>, expected <{root_name}>")
    return root


def element_tree(data):
    """The root element of UTF-8 `data`, refusing DTDs and entities as defusedxml does (its exceptions) and
    nesting deeper than MAX_DEPTH; every tag is its local name (the mapping reads no namespace).

    defusedxml's parser is ElementTree's pure-Python one, which runs Python code for every element and
    took 3 times as long on a report document; here expat feeds ElementTree's C TreeBuilder with one small
    Python call at each start and end of an element."""
    builder, depth = TreeBuilder(), 0

    def start(tag, attributes):
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise MalformedXml(f"document is nested deeper than {MAX_DEPTH} elements")
        if attributes and any("}" in name for name in attributes):
            attributes = {f"{{{name}" if "}" in name else name: value for name, value in attributes.items()}
        builder.start(tag.rpartition("}")[2], attributes)

    def end(tag):
        nonlocal depth
        depth -= 1
        builder.end(tag)

    parser = expat.ParserCreate("utf-8", "}")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _forbid_dtd
    parser.EntityDeclHandler = _forbid_entity
    parser.UnparsedEntityDeclHandler = _forbid_unparsed_entity
    parser.ExternalEntityRefHandler = _forbid_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.Parse(data, True)
    return builder.close()


def _forbid_dtd(name, sysid, pubid, has_internal_subset):
    raise DTDForbidden(name, sysid, pubid)


def _forbid_entity(name, is_parameter_entity, value, base, sysid, pubid, notation_name):
    raise EntitiesForbidden(name, value, base, sysid, pubid, notation_name)


def _forbid_unparsed_entity(name, base, sysid, pubid, notation_name):
    raise EntitiesForbidden(name, None, base, sysid, pubid, notation_name)


def _forbid_external(context, base, sysid, pubid):
    raise ExternalReferenceForbidden(context, base, sysid, pubid)


def _child(element, name):
    return None if element is None else element.find(name)


def _children(element, name):
    return [] if element is None else element.findall(name)


def _text(element, name):
    child = _child(element, name)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _boolean(element, name, where):
    value = _text(element, name)
    if value is None:
        return None
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidDocument(f"{where}/{name}: {value[:20]!r} is not a boolean")


def _integer(text, where, low, high):
    if text is None:
        return None
    if not re.fullmatch(r"[+-]?\d{1,10}", text):
        raise InvalidDocument(f"{where}: {text[:20]!r} is not an integer")
    value = int(text)
    if not low <= value <= high:
        raise InvalidDocument(f"{where}: {value} is outside {low}..{high}")
    return value


def rfc3339(text, where):
    """An xs:dateTime with an offset, as an RFC 3339 UTC string; InvalidDocument otherwise."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidDocument(f"{where}: {text[:40]!r} is not a date-time") from None
    if parsed.tzinfo is None:
        raise InvalidDocument(f"{where}: {text[:40]!r} has no UTC offset")
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_of(value, allowed, where):
    if value is not None and value not in allowed:
        raise InvalidDocument(f"{where}: {value[:60]!r} is not one of {', '.join(allowed)}")
    return value


def _flags(element, names):
    present = {child.tag for child in element} if element is not None else set()
    return [name for name in names if name in present]


def ip_capture_event(element, where):
    return {
        "ipAddress": _text(element, "ipAddress"),
        "eventName": _one_of(_text(element, "eventName"), EVENT_NAMES, f"{where}/eventName"),
        "dateTime": rfc3339(_text(element, "dateTime"), f"{where}/dateTime"),
        "possibleProxy": _boolean(element, "possibleProxy", where),
        "port": _integer(_text(element, "port"), f"{where}/port", 0, 65535),
    }


def report_from_xml(data):
    """The contract fields of a `report` document (without reportId, submittedAt and reporter.espId)."""
    root = parse_document(data, "report")
    summary = _child(root, "incidentSummary")
    if summary is None or _text(summary, "incidentType") is None:
        raise InvalidDocument("report/incidentSummary/incidentType is required")
    batched = _child(root, "batchedReport")
    return {
        "reporter": _reporter(_child(root, "reporter")),
        "incidentSummary": {
            "incidentType": _text(summary, "incidentType"),
            "incidentDateTime": rfc3339(_text(summary, "incidentDateTime"), "incidentSummary/incidentDateTime"),
            "escalateToHighPriority": _text(summary, "escalateToHighPriority"),
            "reportAnnotations": _flags(_child(summary, "reportAnnotations"), REPORT_ANNOTATIONS),
        },
        "batchedReport": None if batched is None else {
            "reason": _one_of(batched.get("reason"), ("VIRAL_POTENTIAL_MEME",), "batchedReport/@reason")},
        "internetDetails": [detail for details in _children(root, "internetDetails")
                            for detail in _internet_details(details)],
        "personOrUserReported": _person_or_user(_child(root, "personOrUserReported")),
        "victims": [_victim(victim) for victim in _children(root, "victim")],
    }


def _reporter(element):
    person = _child(element, "reportingPerson")
    reporter = {"kind": "esp"}
    if person is not None:
        reporter["reportingPerson"] = contact_details(person)
    return reporter


def contact_details(person):
    return {"firstName": _text(person, "firstName"), "lastName": _text(person, "lastName"),
            "email": _text(person, "email"), "phone": _text(person, "phone")}


def _internet_details(element):
    for incident in element:
        kind = INCIDENT_KINDS.get(incident.tag)
        if kind is None:
            continue
        urls = [url.text.strip() for url in _children(incident, "url") if url.text and url.text.strip()]
        yield from ({"kind": kind, "url": url} for url in urls) if urls else [{"kind": kind, "url": None}]


def _person_or_user(element):
    if element is None:
        return None
    location = _child(element, "estimatedLocation")
    return {
        "espIdentifier": _text(element, "espIdentifier"),
        "screenName": _text(element, "screenName"),
        "ipCaptureEvents": [ip_capture_event(event, f"personOrUserReported/ipCaptureEvent[{index}]")
                            for index, event in enumerate(_children(element, "ipCaptureEvent"))],
        "estimatedLocation": None if location is None else {
            "countryCode": _text(location, "countryCode"), "region": _text(location, "region"),
            "city": _text(location, "city")},
    }


def _victim(element):
    person = _child(element, "victimPerson")
    return {"ageEstimate": _integer(_text(person, "age"), "victim/victimPerson/age", 0, 150)}


def file_details_from_xml(data):
    """(reportId, fileId, contract file fields) of a `fileDetails` document."""
    root = parse_document(data, "fileDetails")
    report_id, file_id = _text(root, "reportId"), _text(root, "fileId")
    if report_id is None or file_id is None:
        raise InvalidDocument("fileDetails/reportId and fileDetails/fileId are required")
    event = _child(root, "ipCaptureEvent")
    details = {
        "fileName": _text(root, "originalFileName"),
        "fileViewedByEsp": _boolean(root, "fileViewedByEsp", "fileDetails"),
        "publiclyAvailable": _boolean(root, "publiclyAvailable", "fileDetails"),
        "locationOfFile": _text(root, "locationOfFile"),
        "industryClassification": _one_of(_text(root, "industryClassification"), INDUSTRY_CLASSES,
                                          "fileDetails/industryClassification"),
        "fileAnnotations": _flags(_child(root, "fileAnnotations"), FILE_ANNOTATIONS),
        "originalFileHashes": [_original_hash(element) for element in _children(root, "originalFileHash")],
        "ipCaptureEvent": None if event is None else ip_capture_event(event, "fileDetails/ipCaptureEvent"),
    }
    return report_id, file_id, details


def _original_hash(element):
    value = (element.text or "").strip()
    hash_type = (element.get("hashType") or "").strip()
    if not value or not hash_type:
        raise InvalidDocument("fileDetails/originalFileHash needs a hashType attribute and a value")
    return {"hashType": hash_type, "value": value}
