"""Takedown notices: one per (provider, URL) and UTC day, listing every report and file that pointed at it.

When a report's user cannot be located (no location, or only an anonymiser's), whoever hosts its publicly
available files is asked to take them down. Each such file is a *sighting* of its URL; the sightings of
one URL at one provider on one UTC day form one notice (a viral URL in 500 reports is one notice, not
500), with a deterministic id, so a replay or a late pane names the same notice. Notices carry the URL:
the host needs it to act, which makes `notices/` a restricted output (owner-only, never copied into routed
records, trends, bundles, alerts, summaries or logs).
"""
import dataclasses
import hashlib

from transforms.takedown.providers import provider_of
from transforms.takedown.urls import parse_url

UNKNOWN_PROVIDER = "unknown"
REASON = "publicly available media of a user who could not be located"


def user_unlocated(geo):
    """No location an agency could act on: none at all, or only an anonymiser's or proxy's."""
    return geo["locationSource"] == "none" or geo.get("anonymous") is True


def file_hashes(report, index, file):
    """The hash stage's hashes of the file, else the provider's original hashes."""
    hashed_files = (report.get("_hashes") or {}).get("files") or []
    if index < len(hashed_files):
        return list(hashed_files[index].get("hashes") or [])
    return [{"signalType": value.get("hashType"), "value": value.get("value"), "source": "provided"}
            for value in file.get("originalFileHashes") or []]


FACT_FIELDS = ("provider", "host", "hostIsIp", "hostAsn", "hostAsOrganization", "hostIsp", "hostingCountry",
               "checkable", "notCheckableReason")


def host_facts(url, network_of=None, country_of=None, resolver=None):
    """What a notice says of where `url` is hosted: provider, host, its network and country, and whether a
    machine may check it. `network_of(ip)` and `country_of(ip)` look an address up (None: not known)."""
    parsed = parse_url(url)
    address = parsed.host if parsed.host_is_ip else (
        resolver.address_of(parsed.host) if resolver is not None and parsed.host else None)
    network = network_of(address) if network_of is not None and address else None
    return {
        "provider": provider_of(parsed, network if parsed.host_is_ip else None) or UNKNOWN_PROVIDER,
        "host": parsed.host,
        "hostIsIp": parsed.host_is_ip,
        "hostAsn": (network or {}).get("asn"),
        "hostAsOrganization": (network or {}).get("asOrganization"),
        "hostIsp": (network or {}).get("isp"),
        "hostingCountry": country_of(address) if country_of is not None and address else None,
        "checkable": parsed.not_checkable is None,
        "notCheckableReason": parsed.not_checkable,
    }


def sightings(report, network_of=None, country_of=None, resolver=None):
    """((provider, url), sighting) for each publicly available file of an unlocated user's report."""
    if not user_unlocated(report["_geo"]):
        return []
    jurisdiction = (report.get("_routing") or {}).get("jurisdiction")
    found = []
    for index, file in enumerate(report.get("files") or []):
        url = file.get("locationOfFile")
        if file.get("publiclyAvailable") is not True or not isinstance(url, str) or not url.strip():
            continue
        facts = host_facts(url, network_of, country_of, resolver)
        found.append(((facts["provider"], url), Sighting(
            facts, report["reportId"], file.get("fileId"), tuple(_hash_pairs(file_hashes(report, index, file))),
            jurisdiction)))
    return found


def _hash_pairs(hashes):
    return sorted((str(item.get("signalType")), str(item.get("value"))) for item in hashes)


@dataclasses.dataclass
class Sighting:
    """One file of one report pointing at a URL."""
    facts: dict
    report_id: str
    file_id: str | None
    hashes: tuple
    jurisdiction: str | None


FEW = 16  # a notice keeps up to this many distinct files (or hashes, or jurisdictions) in a tuple, more in a set


def with_values(held, values):
    """`held` (a tuple of distinct values, or a set once they are more than FEW) with `values` added.

    Why tuples: a notice waits a day and a week's lateness, one per URL, and nearly every one has one file;
    a one-value set takes 216 bytes, a one-value tuple 48. A set past FEW keeps a viral URL's adds cheap."""
    if isinstance(held, set):
        held.update(values)
        return held
    new = tuple(value for value in dict.fromkeys(values) if value not in held)
    if not new:
        return held
    held += new
    return held if len(held) <= FEW else set(held)


class NoticeTally:
    """What one notice accumulates from its URL's sightings on one day: the host's facts, as the values of
    `FACT_FIELDS`, and the distinct files ((reportId, fileId)), hashes ((signalType, value)) and
    jurisdictions (`with_values`): ~1.1 KB for a one-sighting notice, where a dict and three sets took ~1.85."""
    __slots__ = ("fact_values", "files", "hashes", "jurisdictions")

    def __init__(self):
        self.fact_values = None
        self.files = self.hashes = self.jurisdictions = ()

    @property
    def facts(self):
        return None if self.fact_values is None else dict(zip(FACT_FIELDS, self.fact_values))

    def add(self, sighting):
        if self.fact_values is None:
            self.fact_values = tuple(sighting.facts[field] for field in FACT_FIELDS)
        self.files = with_values(self.files, ((sighting.report_id, sighting.file_id or ""),))
        self.hashes = with_values(self.hashes, sighting.hashes)
        if sighting.jurisdiction:
            self.jurisdictions = with_values(self.jurisdictions, (sighting.jurisdiction,))

    def merge(self, other):
        if self.fact_values is None:
            self.fact_values = other.fact_values
        self.files = with_values(self.files, other.files)
        self.hashes = with_values(self.hashes, other.hashes)
        self.jurisdictions = with_values(self.jurisdictions, other.jurisdictions)


def notice_id(provider, url, day):
    """Deterministic: the same provider, URL and UTC day always name the same notice."""
    return "ntc-" + hashlib.sha256(f"{provider}\n{url}\n{day}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def notice_record(provider, url, day, tally, pane):
    """The notice: provider and URL, where it is hosted, the reports and files that pointed at it."""
    return {
        "noticeId": notice_id(provider, url, day),
        "day": day,
        "url": url,
        **tally.facts,
        "provider": provider,
        "reports": [{"reportId": report_id, "fileId": file_id or None} for report_id, file_id in sorted(tally.files)],
        "reportCount": len({report_id for report_id, _ in tally.files}),
        "hashes": [{"signalType": kind, "value": value} for kind, value in sorted(tally.hashes)],
        "jurisdictions": sorted(tally.jurisdictions),
        "reason": REASON,
        **pane,
    }
