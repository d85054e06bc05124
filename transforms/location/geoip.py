"""Which IP locates a report's user, and where MaxMind places it: the pure core of `EnrichGeo`.

IP choice policy: the files' Upload events first (the strongest link between a person and the media),
then the files' other events, then the reported user's capture events, newest first. Missing, malformed
and non-routable addresses (private, CGNAT, loopback, link-local, multicast, documentation, reserved...)
are skipped with their reason; so is a public IP the City database does not place in a country. The first
IP placed in a country is chosen. With no such IP, the producer's `estimatedLocation` is the fallback.

Lookups read the raw `maxminddb` C reader's dicts (about 5x faster than geoip2's model objects) with the
field semantics of geoip2's `city()`, `asn()`, `isp()` and `anonymous_ip()`, behind per-instance LRU caches.
"""
import bisect
import functools
import ipaddress
import os
import re
import socket
from datetime import datetime, timezone

import maxminddb

from schemas import reference_table
from transforms.plumbing.reference_files import stage

# Entries per lookup cache. A report's IP is looked up twice (chosen, then located), and a user or an
# incident's reports repeat IPs within minutes, which a few thousand recent ones serve; a stream of new IPs
# never hits, and each cached IP holds ~900 bytes across the caches, so 65,536 entries grew a worker by up
# to ~60 MB where 4,096 hold ~4 MB.
DEFAULT_CACHE_SIZE = 4096

DATABASE_KINDS = {"city": "City", "asn": "ASN", "anonymous": "Anonymous-IP", "isp": "ISP"}

UNPLACED_PUBLIC_IP = "public, but the GeoIP City database places it in no country"
LOCATION_FIELDS = ("ip", "ipSource", "ipChoiceReason", "countryCode", "subdivisionCode", "city",
                   "accuracyRadiusKm", "asn", "asOrganization", "anonymous", "locationSource", "unlocatedReason")

# MaxMind's legacy codes that name no country: anonymous proxy, satellite provider, other, Asia/Pacific, Europe.
PSEUDO_COUNTRY_CODES = frozenset({"A1", "A2", "O1", "AP", "EU"})
HIDING_PSEUDO_COUNTRIES = {"A1": "anonymous proxy pseudo-country A1", "A2": "satellite provider pseudo-country A2"}

ANONYMOUS_IP_FLAGS = (("is_anonymous_vpn", "anonymous VPN"), ("is_public_proxy", "public proxy"),
                      ("is_tor_exit_node", "Tor exit node"), ("is_hosting_provider", "hosting provider"),
                      ("is_residential_proxy", "residential proxy"))
CITY_TRAIT_FLAGS = (("is_anonymous_proxy", "anonymous proxy (City traits)"),
                    ("is_satellite_provider", "satellite provider (City traits)"))


def _v4(cidr):
    network = ipaddress.IPv4Network(cidr)
    return int(network.network_address), int(network.broadcast_address)


# IANA special-purpose IPv4 ranges (RFC 6890 and successors), sorted by start; none is a user's location.
_IPV4_BOGONS = sorted([
    (*_v4("0.0.0.0/8"), "unspecified ('this network', 0.0.0.0/8)"),
    (*_v4("10.0.0.0/8"), "private (RFC 1918)"),
    (*_v4("100.64.0.0/10"), "CGNAT shared address space (RFC 6598)"),
    (*_v4("127.0.0.0/8"), "loopback"),
    (*_v4("169.254.0.0/16"), "link-local"),
    (*_v4("172.16.0.0/12"), "private (RFC 1918)"),
    (*_v4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (*_v4("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (*_v4("192.88.99.0/24"), "reserved (6to4 relay anycast)"),
    (*_v4("192.168.0.0/16"), "private (RFC 1918)"),
    (*_v4("198.18.0.0/15"), "reserved (benchmarking)"),
    (*_v4("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (*_v4("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (*_v4("224.0.0.0/4"), "multicast"),
    (*_v4("240.0.0.0/4"), "reserved (240.0.0.0/4, broadcast)"),
])
_IPV4_BOGON_STARTS = [start for start, _, _ in _IPV4_BOGONS]

def _v6(cidr):
    network = ipaddress.IPv6Network(cidr)
    return int(network.network_address), int(network.broadcast_address)


# IANA special-purpose IPv6 ranges, checked in order (a more specific range before the one holding it).
_IPV6_BOGONS = [
    (*_v6("::/128"), "unspecified"),
    (*_v6("::1/128"), "loopback"),
    (*_v6("fe80::/10"), "link-local"),
    (*_v6("ff00::/8"), "multicast"),
    (*_v6("fc00::/7"), "private (unique local, RFC 4193)"),
    (*_v6("2001:db8::/32"), "documentation (RFC 3849)"),
    (*_v6("3fff::/20"), "documentation (RFC 9637)"),
    (*_v6("2001::/32"), "reserved (Teredo tunnel)"),
    (*_v6("2001::/23"), "reserved (IETF protocol assignments)"),
    (*_v6("2002::/16"), "reserved (6to4 tunnel)"),
    (*_v6("64:ff9b::/96"), "reserved (NAT64 translation)"),
    (*_v6("100::/64"), "reserved (discard-only)"),
]
_IPV6_GLOBAL_UNICAST = _v6("2000::/3")
_IPV4_MAPPED_PREFIX = 0xFFFF

def _ipv4_int(text):
    """The IPv4 address as an int for dotted-quad text (four decimal octets, no leading zeros), else None.
    inet_pton reads exactly that form (BIND's parser, in glibc, musl and the BSDs): 4x faster than splitting
    the text in Python, which was 5x faster than ipaddress. IPv6 text is turned away before the call."""
    if ":" in text:
        return None
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None


def _ipv4_bogon_reason(value):
    index = bisect.bisect_right(_IPV4_BOGON_STARTS, value) - 1
    if index >= 0 and value <= _IPV4_BOGONS[index][1]:
        return _IPV4_BOGONS[index][2]
    return None


def _ipv6_bogon_reason(value):
    for start, end, reason in _IPV6_BOGONS:
        if start <= value <= end:
            return reason
    if not _IPV6_GLOBAL_UNICAST[0] <= value <= _IPV6_GLOBAL_UNICAST[1]:
        return "reserved (outside 2000::/3 global unicast)"
    return None


def _ipv6_packed(text):
    """The 16 bytes of an IPv6 address (inet_pton: 30x faster than ipaddress), else None."""
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=DEFAULT_CACHE_SIZE)
def classify_ip(text):
    """`(normalised ip, None)` for a public address, or `(normalised ip or None, why it is unusable)`.

    IPv4-mapped IPv6 (`::ffff:81.2.69.142`) is normalised to IPv4 before the checks.
    """
    if not isinstance(text, str) or not text.strip():
        return None, "missing"
    text = text.strip()
    value = _ipv4_int(text)
    if value is not None:
        return text, _ipv4_bogon_reason(value)
    packed = _ipv6_packed(text)
    if packed is None:
        return _classify_unusual(text)
    value = int.from_bytes(packed, "big")
    if value >> 32 == _IPV4_MAPPED_PREFIX:
        mapped = value & 0xFFFFFFFF
        return socket.inet_ntop(socket.AF_INET, packed[12:]), _ipv4_bogon_reason(mapped)
    return socket.inet_ntop(socket.AF_INET6, packed), _ipv6_bogon_reason(value)


def _classify_unusual(text):
    """What the fast paths refuse: zone-indexed IPv6 (link-local by nature), else malformed."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if getattr(address, "scope_id", None):
        return str(address), "link-local (zone index)"
    return None, "malformed (not an IPv4 or IPv6 address)"


def _recency_key(event):
    """Newest first; events with a missing or unreadable dateTime last, in their given order."""
    try:
        moment = datetime.fromisoformat(event.get("dateTime").replace("Z", "+00:00"))
        return 0, -moment.timestamp()
    except (AttributeError, TypeError, ValueError):
        return 1, 0.0


def candidate_events(report):
    """`(source label, ipCaptureEvent)` pairs in policy order: file Uploads, other file events, user events by recency."""
    return [(_source_of(*candidate), candidate[2]) for candidate in _policy_ordered(report)]


def _policy_ordered(report, users_in_order=lambda user_events: True):
    """`(file, index, event)` of each IP capture event in policy order (file None for the user's events):
    labels are made only for the events a decision names. The user's events are put in order only if
    `users_in_order(their list)` says their order matters, asked once the file events have been taken."""
    uploads, other_file_events = [], []
    for index, file in enumerate(report.get("files") or []):
        event = file.get("ipCaptureEvent")
        if not event:
            continue
        (uploads if (event.get("eventName") or "Unknown") == "Upload" else other_file_events).append((file, index, event))
    for candidate in uploads + other_file_events:
        yield candidate
    user = report.get("personOrUserReported") or {}
    user_events = user.get("ipCaptureEvents") or []
    if len(user_events) > 1 and users_in_order(user_events):  # one event needs no order, nor its dateTime parsed
        user_events = sorted(user_events, key=_recency_key)
    for event in user_events:
        yield None, 0, event


def _source_of(file, index, event):
    """`file f-1 Upload`, `file #2 Login`, `user Login 2026-11-20T00:00:00Z`: which event an IP came from."""
    name = event.get("eventName") or "Unknown"
    if file is None:
        return f"user {name} {event.get('dateTime') or '(no dateTime)'}"
    return f"file {file.get('fileId') or f'#{index + 1}'} {name}"


def _english_name(record):
    return ((record or {}).get("names") or {}).get("en")


def city_fields(record):
    """The Location fields a City record gives (geoip2 `city()` semantics), plus why it hides the user."""
    country = (record.get("country") or {}).get("iso_code")
    subdivisions = record.get("subdivisions") or []
    traits = record.get("traits") or {}
    hiding = [reason for flag, reason in CITY_TRAIT_FLAGS if traits.get(flag)]
    if country in HIDING_PSEUDO_COUNTRIES:
        hiding.append(HIDING_PSEUDO_COUNTRIES[country])
    return {
        "countryCode": country,
        "subdivisionCode": subdivisions[0].get("iso_code") if subdivisions else None,
        "city": _english_name(record.get("city")),
        "accuracyRadiusKm": (record.get("location") or {}).get("accuracy_radius"),
    }, tuple(hiding)


def anonymity_reasons(record):
    """What an Anonymous-IP record says about the address (empty for a clean or missing record)."""
    record = record or {}
    reasons = tuple(reason for flag, reason in ANONYMOUS_IP_FLAGS if record.get(flag))
    return reasons or (("anonymous (Anonymous-IP db)",) if record.get("is_anonymous") else ())


# What each kind of database must declare in its metadata (`database_type`): a word of the type name.
# ISP databases also carry the ASN fields, Enterprise databases the City ones.
EXPECTED_DATABASE_TYPES = {"city": ("City", "Enterprise"), "asn": ("ASN", "ISP"), "anonymous": ("Anonymous",),
                           "isp": ("ISP",)}


class GeoIPDatabaseError(ValueError):
    """A GeoIP database that cannot serve as its `kind` (city, asn, anonymous, isp); the options layer names
    the flag it came from (pipelines/options.py)."""

    def __init__(self, kind, detail):
        super().__init__(f"{DATABASE_KINDS[kind]} database: {detail}")
        self.kind, self.detail = kind, detail


def open_reader(path, kind):
    """A memory-mapped C-extension reader of a local copy of `path` (any Beam filesystem, staged once per
    worker) of the type a `kind` database must be; `GeoIPDatabaseError` when the file cannot be opened or
    declares another type (a City database read as Anonymous-IP flags nothing)."""
    try:
        path = stage(path)
    except ValueError as error:
        raise GeoIPDatabaseError(kind, str(error)) from None
    if not path or not os.path.isfile(path):
        raise GeoIPDatabaseError(kind, f"GeoIP database file not found: {path!r}")
    try:
        reader = maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
        raise GeoIPDatabaseError(kind, f"cannot read GeoIP database {path!r}: {error}") from error
    check_database_type(reader.metadata().database_type, path, kind)
    return reader


def check_database_type(database_type, path, kind):
    """`GeoIPDatabaseError` when `database_type` is not one a `kind` database's lookups can read."""
    expected = EXPECTED_DATABASE_TYPES[kind]
    if not any(word in database_type.split("-") for word in expected):
        raise GeoIPDatabaseError(kind, f"{path!r} is a {database_type} database; this needs a "
                                 + " or ".join(f"*-{word}*" for word in expected) + " database")


def database_provenance(path, kind):
    """{path, database_type, build_date} of a GeoIP database, checked as `open_reader` checks it."""
    reader = open_reader(path, kind)
    try:
        metadata = reader.metadata()
    finally:
        reader.close()
    built = datetime.fromtimestamp(metadata.build_epoch, tz=timezone.utc)
    return {"path": path, "database_type": metadata.database_type, "build_date": built.strftime("%Y-%m-%d"),
            "build_epoch": metadata.build_epoch}


def check_databases(city_db, asn_db=None, anonymous_db=None, isp_db=None):
    """Opens each given database once so a bad path fails at start-up (raises GeoIPDatabaseError)."""
    for kind, path in (("city", city_db), ("asn", asn_db), ("anonymous", anonymous_db), ("isp", isp_db)):
        if path is None and kind != "city":
            continue
        open_reader(path, kind).close()


class NetworkLookup:
    """Who runs an address: ASN and organisation (ASN db), ISP (ISP db). Used for users' and hosts' IPs."""

    def __init__(self, asn_db=None, isp_db=None, cache_size=DEFAULT_CACHE_SIZE):
        self.asn_reader = open_reader(asn_db, "asn") if asn_db else None
        self.isp_reader = open_reader(isp_db, "isp") if isp_db else None
        self.network_of = (functools.lru_cache(maxsize=cache_size)(self._network_of)
                           if self.asn_reader or self.isp_reader else self._no_network)

    @staticmethod
    def _no_network(ip):
        """Without an ASN or ISP database every field is unknown: no lookup, and no cache entry per address."""
        return {"asn": None, "asOrganization": None, "isp": None}

    def _network_of(self, ip):
        """`{"asn", "asOrganization", "isp"}` for a normalised IP (None where a database is absent or silent)."""
        asn_record = (self.asn_reader.get(ip) if self.asn_reader else None) or {}
        isp_record = (self.isp_reader.get(ip) if self.isp_reader else None) or {}
        return {
            "asn": asn_record.get("autonomous_system_number", isp_record.get("autonomous_system_number")),
            "asOrganization": asn_record.get("autonomous_system_organization",
                                             isp_record.get("autonomous_system_organization")),
            "isp": isp_record.get("isp"),
        }


class GeoLocator:
    """Chooses a report's IP and locates it with the City (and optional ASN, Anonymous-IP, ISP) databases."""

    def __init__(self, city_db, asn_db=None, anonymous_db=None, isp_db=None, cache_size=DEFAULT_CACHE_SIZE):
        self.city_reader = open_reader(city_db, "city")
        self.anonymous_reader = open_reader(anonymous_db, "anonymous") if anonymous_db else None
        self.network = NetworkLookup(asn_db, isp_db, cache_size)
        self.city_of = functools.lru_cache(maxsize=cache_size)(self._city_of)
        self.anonymity_of = (functools.lru_cache(maxsize=cache_size)(self._anonymity_of)
                             if self.anonymous_reader else self._anonymity_unknown)

    def network_of(self, ip):
        return self.network.network_of(ip)

    def _city_of(self, ip):
        """`(fields, hiding reasons)` for a public IP, or None when the City db does not place it in a country."""
        try:
            record = self.city_reader.get(ip)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        if not record:
            return None
        fields, hiding = city_fields(record)
        return (fields, hiding) if fields["countryCode"] else None

    def _anonymity_of(self, ip):
        """Anonymous-IP reasons (empty for a clean address)."""
        return anonymity_reasons(self.anonymous_reader.get(ip))

    @staticmethod
    def _anonymity_unknown(ip):
        """Without an Anonymous-IP database: None, unknown (not 'clean'), with no cache entry per address."""
        return None

    def lookup(self, text):
        """City fields for one IP string (None when unusable or not placed): the benchmark's unit of work."""
        ip, problem = classify_ip(text)
        return None if problem else self.city_of(ip)

    def consider(self, report):
        """Every candidate IP in policy order with its decision: chosen, skipped (and why) or not needed."""
        return self._consider(report, every_unneeded=True)

    def _consider(self, report, every_unneeded):
        """`consider`; without `every_unneeded`, of the candidates after the chosen one only those flagged as a
        possible proxy, and those without their source label: all that locating the report reads of them."""
        considered, chosen = [], None

        def users_in_order(user_events):
            """Whether the user's events are decided on or listed in order; after a chosen IP, locating
            reads only which of them a provider flagged as a possible proxy, in order when there are two."""
            return every_unneeded or chosen is None or sum(event.get("possibleProxy") is True
                                                           for event in user_events) > 1

        for file, index, event in _policy_ordered(report, users_in_order):
            address, proxy = event.get("ipAddress"), event.get("possibleProxy")
            if chosen is not None:
                if every_unneeded:
                    considered.append({"source": _source_of(file, index, event), "ipAddress": address,
                                       "possibleProxy": proxy, "decision": "not needed",
                                       "reason": "an earlier IP was chosen"})
                elif proxy is True:
                    considered.append({"ipAddress": address, "possibleProxy": proxy, "decision": "not needed"})
                continue
            source = _source_of(file, index, event)
            ip, problem = classify_ip(address)
            if problem:
                considered.append({"source": source, "ipAddress": address, "possibleProxy": proxy, "ip": ip,
                                   "decision": "skipped", "reason": problem})
            elif self.city_of(ip) is None:
                considered.append({"source": source, "ipAddress": address, "possibleProxy": proxy, "ip": ip,
                                   "public": True, "decision": "skipped", "reason": UNPLACED_PUBLIC_IP})
            else:
                chosen = {"source": source, "ipAddress": address, "possibleProxy": proxy, "ip": ip,
                          "decision": "chosen", "reason": "first IP in policy order placed in a country", "public": True}
                considered.append(chosen)
        return considered

    def locate(self, report):
        """The report's `_geo`: exactly the fields of the `Location` record of schemas/routed_report.avsc."""
        considered = self._consider(report, every_unneeded=False)
        chosen = next((entry for entry in considered if entry["decision"] == "chosen"), None)
        if chosen is not None:
            return self._located_by_ip(chosen, considered)
        first_public = next((entry for entry in considered if entry.get("public")), None)
        location = _with_estimated_location(self._unlocated_ip(first_public, considered), report)
        return {field: location[field] for field in LOCATION_FIELDS}

    def _located_by_ip(self, chosen, considered):
        """The location of the chosen IP, its fields made in LOCATION_FIELDS order (most reports take this
        path: no reordering copy)."""
        ip = chosen["ip"]
        fields, hiding = self.city_of(ip)
        network = self.network_of(ip)
        hiding = list(hiding) + flagged_proxies(considered)
        anonymity = self.anonymity_of(ip)
        hiding.extend(anonymity or ())
        return {"ip": ip, "ipSource": chosen["source"], "ipChoiceReason": choice_reason(chosen, considered, hiding),
                "countryCode": fields["countryCode"], "subdivisionCode": fields["subdivisionCode"],
                "city": fields["city"], "accuracyRadiusKm": fields["accuracyRadiusKm"],
                "asn": network["asn"], "asOrganization": network["asOrganization"],
                "anonymous": True if hiding else (False if anonymity is not None else None),
                "locationSource": "geoip", "unlocatedReason": None}

    def _unlocated_ip(self, first_public, considered):
        location = dict.fromkeys(LOCATION_FIELDS)
        location["locationSource"] = "none"
        hiding = flagged_proxies(considered)
        if first_public is None:
            location["ipChoiceReason"] = choice_reason(None, considered, hiding)
            location["unlocatedReason"] = "no usable IP" if considered else "no IP in the report"
            location["anonymous"] = True if hiding else None
            return location
        anonymity = self.anonymity_of(first_public["ip"])
        hiding.extend(anonymity or ())
        location.update({"ip": first_public["ip"], "ipSource": first_public["source"],
                         **self._network_fields(first_public["ip"]),
                         "anonymous": True if hiding else (False if anonymity is not None else None)})
        location["ipChoiceReason"] = ("first public IP, kept as an identifier though not located; "
                                      + choice_reason(None, considered, hiding))
        location["unlocatedReason"] = "no candidate IP is placed in a country by the GeoIP City database"
        return location

    def _network_fields(self, ip):
        network = self.network_of(ip)
        return {"asn": network["asn"], "asOrganization": network["asOrganization"]}


def flagged_proxies(considered):
    """The provider's possibleProxy flags on any candidate IP, usable or not: a flagged proxy hides the user
    whichever address ends up locating the report, so none of them may send it to a state task force."""
    flagged = [str(entry.get("ipAddress"))[:60] for entry in considered if entry.get("possibleProxy") is True]
    return [f"possibleProxy flagged by the provider on {', '.join(flagged)}"] if flagged else []


def choice_reason(chosen, considered, hiding):
    """One line: which IP was chosen and why, what was skipped and why, and what hides the user."""
    parts = []
    if chosen is not None:
        parts.append(f"chose {chosen['ip']} ({chosen['source']}): {chosen['reason']}")
    skipped = [f"{entry.get('ipAddress')!s} ({entry['source']}): {entry['reason']}"
               for entry in considered if entry["decision"] == "skipped"]
    if skipped:
        parts.append("skipped " + "; ".join(skipped))
    elif not considered:
        parts.append("no IP capture events")
    if hiding:
        parts.append("hides the user: " + ", ".join(hiding))
    return "; ".join(parts)[:1000]


def _with_estimated_location(location, report):
    """The producer's estimatedLocation as the fallback when no IP was placed, marked as such."""
    estimate = (report.get("personOrUserReported") or {}).get("estimatedLocation") or {}
    country, region, city = (_clean(estimate.get(key)) for key in ("countryCode", "region", "city"))
    if not (country or region or city):
        return location
    refused = [f"{key} {value[:40]!r} is not {what}" for key, value, what in (
        ("countryCode", country, "an ISO 3166 alpha-2 code in schemas/jurisdictions.csv"), ("region", region, "an ISO 3166-2 subdivision code"))
        if value and not _well_formed_code(key, value)]
    country, region = (value if value and _well_formed_code(key, value) else None
                       for key, value in (("countryCode", country), ("region", region)))
    location.update({"countryCode": ascii_upper(country), "subdivisionCode": ascii_upper(region), "city": city,
                     "accuracyRadiusKm": None, "locationSource": "estimatedLocation"})
    location["unlocatedReason"] = ((location["unlocatedReason"] or "") + "; used the provider's estimatedLocation"
                                   + "".join(f" ({reason}: ignored)" for reason in refused))
    return location


COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")
SUBDIVISION_CODE = re.compile(r"([A-Za-z]{2}-)?[A-Za-z0-9]{1,3}")


def _well_formed_code(key, value):
    """ASCII letters (and digits for a subdivision) only, and a country in the jurisdiction table: `str.upper`
    folds "ſ" to "S" and "ı" to "I", so a non-ASCII look-alike must be refused before any case is changed."""
    if key == "countryCode":
        return COUNTRY_CODE.fullmatch(value) is not None and value.upper() in known_country_codes()
    return SUBDIVISION_CODE.fullmatch(value) is not None


@functools.cache
def known_country_codes():
    return frozenset(row["country_code"] for row in reference_table("jurisdictions"))


def ascii_upper(text):
    """Upper case for ASCII text only; None for None or anything else (see `_well_formed_code`)."""
    return text.upper() if isinstance(text, str) and text.isascii() else None


def _clean(value):
    return value.strip() or None if isinstance(value, str) else None
