"""The synthetic report stream of the embedded demo and the benchmarks.

Every report is derived from (seed, index) alone, so any shard of the stream can be generated without
the others and the same seed always gives the same bytes. The mix follows public figures: reporter
countries from NCMEC's 2023 CyberTipline reports by country (schemas/country_mix.csv), US states and a
few cities by 2020 Census population (schemas/us_state_mix.csv). IPs come from the networks of the
synthetic demo GeoIP database (`network_plan`, written by transforms/demo/build_data.py). Inline media are
benign synthetic pictures (transforms/demo/synthetic_images.py); a share re-encode pictures of the demo hash
bank so matching is exercised.

Malformed messages (`malformed_fraction` of the slots), one of MALFORMED_KINDS each:
- `not_json`: text that is not JSON at all;
- `truncated_json`: a report cut off halfway;
- `missing_report_id`: a report without `reportId`;
- `unknown_incident_type`: an incident type that is not one of the 8;
- `wrong_types`: a field of the wrong JSON type (number for a string, string for an int, ...);
- `bad_submitted_at`: a `submittedAt` that is not RFC 3339 UTC;
- `invalid_utf8`: bytes that are not UTF-8;
- `json_array`: a JSON array instead of an object.
"""
import base64
import bisect
import csv
import dataclasses
import functools
import hashlib
import ipaddress
import itertools
import json
import random
import time
from datetime import datetime
from importlib import resources
from typing import NamedTuple

from schemas import reference_table
from transforms.demo.synthetic_images import make_image, variant
from transforms.demo.synthetic_videos import VARIANT_KINDS as VIDEO_VARIANT_KINDS
from transforms.demo.synthetic_videos import VideoSpec, encode_video, variant_spec

MALFORMED_KINDS = ("not_json", "truncated_json", "missing_report_id", "unknown_incident_type", "wrong_types",
                   "bad_submitted_at", "invalid_utf8", "json_array")

# The demo hash bank: pictures of these seeds (pHash) and these file digests (MD5) are "known";
# pictures of BENIGN_IMAGE_SEEDS are in the negative bank. New media use seeds from NEW_IMAGE_SEEDS_FROM on.
KNOWN_IMAGE_SEEDS = range(1, 201)
BENIGN_IMAGE_SEEDS = range(901, 909)
NEW_IMAGE_SEEDS_FROM = 1_000_000
# Videos of these seeds are in the demo bank (VPDQ); inline videos re-encode them or are new.
KNOWN_VIDEO_SEEDS = range(1, 5)
KNOWN_MD5_COUNT = 300
MEDIA_SIDE = 128  # inline pictures stay a few KB
PNG_SIGNATURE = b"\x89PNG"

# Fictional electronic service providers: (espId, name, relative volume).
ESPS = (
    ("esp-01", "ExampleSocial", 40), ("esp-02", "PhotoNest", 18), ("esp-03", "ChatHarbor", 12),
    ("esp-04", "ClipStream", 8), ("esp-05", "CloudLocker", 6), ("esp-06", "GameGlade", 4),
    ("esp-07", "PixelPost", 3), ("esp-08", "MeetMeadow", 3), ("esp-09", "MailMarsh", 2),
    ("esp-10", "ForumFjord", 2), ("esp-11", "VaultVerse", 1), ("esp-12", "TinyTalk", 1),
)
# Incident types: CSAM dominant, enticement next; the rare ones kept frequent enough to show up in a demo.
INCIDENT_TYPES = (
    ("Child Pornography (possession, manufacture, and distribution)", 900),
    ("Online Enticement of Children for Sexual Acts", 50),
    ("Unsolicited Obscene Material Sent to a Child", 15),
    ("Child Sex Trafficking", 10),
    ("Child Sexual Molestation", 10),
    ("Misleading Words or Digital Images on the Internet", 8),
    ("Misleading Domain Name", 4),
    ("Child Sex Tourism", 3),
)
ENTICEMENT = INCIDENT_TYPES[1][0]
REPORT_ANNOTATIONS = ("sextortion", "csamSolicitation", "minorToMinorInteraction", "spam",
                      "sadisticOnlineExploitation")
FILE_ANNOTATIONS = ("animeDrawingVirtualHentai", "potentialMeme", "viral", "possibleSelfProduction", "physicalHarm",
                    "violenceGore", "bestiality", "liveStreaming", "infant", "generativeAi")
INTERNET_KINDS = (("webPage", 30), ("chatIm", 25), ("email", 8), ("onlineGaming", 6), ("cellPhone", 4),
                  ("peer2peer", 3), ("newsgroup", 1), ("nonInternet", 1))
VIEWED_MIX = ((True, 60), (False, 25), (None, 15))
CLASSIFICATION_MIX = (("A1", 35), ("A2", 15), ("B1", 20), ("B2", 10), (None, 20))
VARIANT_MIX = (("jpeg", 50), ("resize", 20), ("crop", 25), ("png", 5))
ESCALATIONS = ("Reporter believes the child may be in imminent danger.",
               "User stated plans to meet the child in person this week.")
VICTIM_COUNTS = (0, 0, 1, 1, 2)
FILE_HOSTS = ("cdn1.example.net", "files.example.org", "img.example.com", "share.example.net", "media.example.org")
USER_EVENTS = ("Login", "Registration", "Purchase", "Other", "Unknown")

ESP_CUM, INCIDENT_CUM, INTERNET_CUM, VIEWED_CUM, CLASSIFICATION_CUM, VARIANT_CUM = (
    list(itertools.accumulate(item[-1] for item in mix))
    for mix in (ESPS, INCIDENT_TYPES, INTERNET_KINDS, VIEWED_MIX, CLASSIFICATION_MIX, VARIANT_MIX))
HOUR, DAY = 3600, 86400
PLAN_SALT = 0xD1B54A32D192ED03

US_WITHOUT_STATE = 0.05  # share of US addresses a City database places in the country only
ESTIMATED_LOCATION_ONLY = 0.03  # share of located reports whose provider gives an estimatedLocation, no IP
IPV6_SHARE = 0.15
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                         "fd00::/8"))
# Network plan of the demo GeoIP database: one /16 (IPv4) and one /32 (IPv6) per place, in ranges
# that are globally routable and outside MaxMind's test databases.
COUNTRY_V4, STATE_V4, CITY_V4 = "45.{}.0.0/16", "46.{}.0.0/16", "46.{}.0.0/16"
COUNTRY_V6, STATE_V6, CITY_V6 = "2a0b:{:x}::/32", "2a0c:{:x}::/32", "2a0c:{:x}::/32"
CITY_BLOCK_OFFSET = 128
ACCURACY_KM = {"country": 1000, "state": 200, "city": 20}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What the synthetic stream holds; `count` is the number of report slots (valid or malformed)."""
    count: int = 3000
    seed: int = 2026
    start: str = "2026-11-23T00:00:00Z"
    hours: float = 4
    files_per_report: tuple = (0, 3)
    media_fraction: float = 0.15
    known_media_fraction: float = 0.5
    benign_media_fraction: float = 0.05
    video_media_fraction: float = 0.04  # of known and new inline media: a short video instead of a picture
    known_md5_fraction: float = 0.1
    redelivery_fraction: float = 0.03
    malformed_fraction: float = 0.01
    proxy_fraction: float = 0.03
    out_of_order_fraction: float = 0.05
    max_out_of_order_minutes: float = 15
    max_redelivery_delay: int = 300  # in report slots

    @classmethod
    def for_benchmark(cls, count, seed=2026):
        """Throughput runs: 3 files per report with provided hashes, no inline media, all valid, no repeats."""
        return cls(count=count, seed=seed, files_per_report=(3, 3), media_fraction=0.0,
                   redelivery_fraction=0.0, malformed_fraction=0.0)


class Place(NamedTuple):
    """Where an IP of the demo GeoIP database puts its user; `weight` is its share of located reports."""
    country: str
    country_name: str
    state: str | None
    state_name: str | None
    city: str | None
    latitude: float | None
    longitude: float | None
    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network
    weight: float

    @property
    def level(self):
        return "city" if self.city else "state" if self.state else "country"


class InlineMedia(NamedTuple):
    """What an inline picture (or video) shows: `kind` is known, benign or new; `seed` its make_image
    (or `demo_video_spec`) seed."""
    file_index: int
    kind: str
    seed: int
    video: bool = False


class SyntheticReport(NamedTuple):
    """A generated report with the truth behind it (for tests): its place (None: no usable location)."""
    report: dict
    place: Place | None
    media: tuple


class ExpectedCounts(NamedTuple):
    messages: int
    valid_reports: int
    redeliveries: int
    malformed: int


@functools.cache
def network_plan():
    """The places of the demo GeoIP database, each with its networks and share of located reports."""
    countries = [row for row in reference_table("country_mix") if row["iso_alpha2"] != "null"]
    located_total = sum(int(row["reports"]) for row in countries)
    places = []
    for number, row in enumerate(countries):
        share = int(row["reports"]) / located_total
        if row["iso_alpha2"] == "US":
            places.extend(_us_places(row["country"], share))
            share *= US_WITHOUT_STATE
        places.append(Place(row["iso_alpha2"], row["country"], None, None, None, None, None,
                            ipaddress.ip_network(COUNTRY_V4.format(number)),
                            ipaddress.ip_network(COUNTRY_V6.format(number)), share))
    return tuple(places)


def _us_places(country_name, us_share):
    rows = reference_table("us_state_mix")
    population = sum(int(row["population"]) for row in rows)
    states = {row["state"]: n for n, row in enumerate(row for row in rows if not row["city"])}
    cities = itertools.count(CITY_BLOCK_OFFSET)
    places = []
    for row in rows:
        block = next(cities) if row["city"] else states[row["state"]]
        v4, v6 = (CITY_V4, CITY_V6) if row["city"] else (STATE_V4, STATE_V6)
        places.append(Place(
            "US", country_name, row["state"], row["state_name"], row["city"] or None,
            float(row["latitude"]) if row["city"] else None, float(row["longitude"]) if row["city"] else None,
            ipaddress.ip_network(v4.format(block)), ipaddress.ip_network(v6.format(block)),
            us_share * (1 - US_WITHOUT_STATE) * int(row["population"]) / population))
    return places


def geoip_record(place):
    """The GeoIP2-City record of `place`, shaped as geoip2's `Reader.city()` reads it."""
    country = {"iso_code": place.country, "names": {"en": place.country_name}}
    record = {"country": country, "registered_country": country,
              "location": {"accuracy_radius": ACCURACY_KM[place.level]}}
    if place.state:
        record["subdivisions"] = [{"iso_code": place.state, "names": {"en": place.state_name}}]
    if place.city:
        record["city"] = {"names": {"en": place.city}}
        record["location"].update(latitude=place.latitude, longitude=place.longitude)
    return record


@functools.cache
def _place_sampler():
    """(places, cumulative weights, share of reports with no usable location), built once per process."""
    places = network_plan()
    rows = reference_table("country_mix")
    null_share = (sum(int(row["reports"]) for row in rows if row["iso_alpha2"] == "null")
                  / sum(int(row["reports"]) for row in rows))
    return places, list(itertools.accumulate(place.weight for place in places)), null_share


@functools.cache
def known_md5s():
    """The MD5 digests the demo bank lists as known files (some provided hashes reuse them)."""
    return tuple(hashlib.md5(f"tipline-demo-known-file-{k}".encode()).hexdigest() for k in range(KNOWN_MD5_COUNT))


@functools.cache
def _bank_phashes():
    """PHASH values of the demo bank, read from the shipped demo-bank.csv (provided hashes near them)."""
    path = resources.files(__package__).joinpath("data", "demo-bank.csv")
    with path.open(newline="") as handle:
        return [row["hash_value"] for row in csv.DictReader(handle) if row["hash_type"] == "PHASH"]


@functools.lru_cache(maxsize=1024)
def _bank_picture(seed):
    return make_image(seed, MEDIA_SIDE)


# -- decisions per slot, cheap enough to count the whole stream -----------------------------------

def _splitmix(value):
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)


@functools.cache
def _seed_key(seed):
    return _splitmix(seed)


def _slot_key(seed, index):
    """64 well-mixed bits for slot `index` of the stream of `seed`: everything in the slot derives from it."""
    return _splitmix(_seed_key(seed) ^ index)


def _slot_plan(config, key):
    """(malformed kind or None, redelivery delay in slots or None) of the slot with `key`: two 32-bit
    halves of one more mix, so the whole stream can be counted cheaply."""
    bits = _splitmix(key ^ PLAN_SALT)
    low, high = bits & 0xFFFFFFFF, bits >> 32
    if low < config.malformed_fraction * 2 ** 32:
        return MALFORMED_KINDS[high % len(MALFORMED_KINDS)], None
    if high < config.redelivery_fraction * 2 ** 32:
        return None, 1 + low % config.max_redelivery_delay
    return None, None


def expected_counts(config):
    """How many messages, valid unique reports, redeliveries and malformed messages the stream has."""
    malformed = redeliveries = 0
    for index in range(config.count):
        kind, delay = _slot_plan(config, _slot_key(config.seed, index))
        malformed += kind is not None
        redeliveries += delay is not None
    return ExpectedCounts(config.count + redeliveries, config.count - malformed, redeliveries, malformed)


# -- the stream ------------------------------------------------------------------------------------

def generate_messages(config, shard=0, num_shards=1):
    """The UTF-8 JSON payloads of shard `shard` of `num_shards`, in slot order; a redelivery follows its
    original a few slots later in the same shard. The union over shards is the whole stream."""
    pending = []  # (slot after which to emit, payload) of redeliveries, in order of emission slot
    for index in range(shard, config.count, num_shards):
        while pending and pending[0][0] <= index:
            yield pending.pop(0)[1]
        key = _slot_key(config.seed, index)
        malformed_kind, delay = _slot_plan(config, key)
        synthetic = _synthetic_report(config, index, key)
        if malformed_kind:
            yield malformed_payload(synthetic.report, malformed_kind, random.Random(key ^ PLAN_SALT))
            continue
        payload = encode_report(synthetic.report)
        yield payload
        if delay:
            bisect.insort(pending, (index + delay, payload), key=lambda item: item[0])
    for _, payload in pending:
        yield payload


def encode_report(report):
    """Compact UTF-8 JSON; the reports are trees, so the circular-reference check is skipped (~15% faster)."""
    return _ENCODER.encode(report).encode("utf-8")


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def synthetic_report(config, index):
    """The valid report of slot `index` and the truth behind it (place, inline media)."""
    return _synthetic_report(config, index, _slot_key(config.seed, index))


def _synthetic_report(config, index, key):
    rng = random.Random(key)
    draw = rng.random
    esp_id, esp_name, _ = _weighted(draw, ESPS, ESP_CUM)
    incident_type = _weighted(draw, INCIDENT_TYPES, INCIDENT_CUM)[0]
    submitted = _submitted_epoch(config, index, draw)
    place, kind = _location(config, draw)
    ip = _ip_in(place, rng) if kind in ("ip", "proxy") else _private_ip(rng) if kind == "private" else None
    upload = _capture_event(draw, ip, "Upload", submitted - _below(draw, 600), kind == "proxy") if ip else None
    files, media = _files(config, index, rng, upload)
    report = {
        "reportId": f"ESP{esp_id[-2:]}-{config.seed}-{index:07d}",
        "submittedAt": _rfc3339(submitted),
        "reporter": {"espId": esp_id, "espName": esp_name},
        "incidentSummary": {
            "incidentType": incident_type,
            "incidentDateTime": _rfc3339(submitted - 60 - _below(draw, 14 * DAY)) if draw() < 0.7 else None,
            "escalateToHighPriority": ESCALATIONS[_below(draw, len(ESCALATIONS))] if draw() < 0.004 else None,
            "reportAnnotations": _report_annotations(rng, incident_type),
        },
        "batchedReport": {"reason": "VIRAL_POTENTIAL_MEME"} if draw() < 0.01 else None,
        "internetDetails": _internet_details(rng),
        "personOrUserReported": _user(rng, index, place, kind, ip, upload if files else None, submitted),
        "victims": [{"ageEstimate": 3 + _below(draw, 15) if draw() < 0.7 else None}
                    for _ in range(VICTIM_COUNTS[_below(draw, len(VICTIM_COUNTS))])],
        "files": files,
    }
    return SyntheticReport(report, place if kind in ("ip", "estimated") else None, media)


def _below(draw, n):
    """A uniform int in [0, n): cheaper than `randrange`, which matters at 200k reports."""
    return int(draw() * n)


def _weighted(draw, items, cum_weights):
    return items[bisect.bisect(cum_weights, draw() * cum_weights[-1])]


def _submitted_epoch(config, index, draw):
    """Slots spread evenly over `hours`; a few arrive up to max_out_of_order_minutes late."""
    offset = (index + draw()) / config.count * config.hours * 3600
    if draw() < config.out_of_order_fraction:
        offset -= draw() * config.max_out_of_order_minutes * 60
    return int(_epoch(config.start) + max(offset, 0))


@functools.cache
def _epoch(rfc3339):
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _rfc3339(epoch):
    minute, second = divmod(epoch, 60)
    return f"{_minute_prefix(minute)}{second:02d}Z"


@functools.lru_cache(maxsize=1 << 16)
def _minute_prefix(minute):
    """'YYYY-MM-DDTHH:MM:' of a minute since the epoch (formatting time is a hot spot at 200k reports)."""
    return time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))


def _location(config, draw):
    """(place, kind): kind `ip` (located by IP), `estimated` (estimatedLocation only), or no usable
    location: `proxy` (IP flagged possibleProxy), `private` (private IPs only), `none` (no IP)."""
    places, cum_weights, null_share = _place_sampler()
    chance = draw()
    if chance < config.proxy_fraction:
        return _weighted(draw, places, cum_weights), "proxy"
    if chance < max(null_share, config.proxy_fraction):
        return None, "private" if draw() < 0.5 else "none"
    return _weighted(draw, places, cum_weights), "estimated" if draw() < ESTIMATED_LOCATION_ONLY else "ip"


def _ip_in(place, rng):
    if rng.random() < IPV6_SHARE:
        return str(place.ipv6[rng.getrandbits(96)])
    host = 1 + _below(rng.random, 65534)
    return f"{_ipv4_prefix(place.ipv4)}{host >> 8}.{host & 255}"


@functools.cache
def _ipv4_prefix(network):
    """'a.b.' of a /16 (formatting through ipaddress is a hot spot at 200k reports)."""
    return str(network.network_address).rsplit(".", 2)[0] + "."


def _private_ip(rng):
    network = PRIVATE_NETWORKS[_below(rng.random, len(PRIVATE_NETWORKS))]
    return str(network[1 + _below(rng.random, network.num_addresses - 2)])


def _report_annotations(rng, incident_type):
    if incident_type == ENTICEMENT and rng.random() < 0.5:
        return ["sextortion"] + (["csamSolicitation"] if rng.random() < 0.3 else [])
    if rng.random() < 0.05:
        return rng.sample(REPORT_ANNOTATIONS, 1 + _below(rng.random, 2))
    return None


def _internet_details(rng):
    details = []
    for _ in range(_below(rng.random, 3)):
        kind = _weighted(rng.random, INTERNET_KINDS, INTERNET_CUM)[0]
        details.append({"kind": kind, "url": f"https://www.example.net/p/{rng.getrandbits(40):010x}"
                        if kind == "webPage" else None})
    return details or None


def _user(rng, index, place, kind, ip, upload, submitted):
    """The reported user: its upload and a few older capture events on the report's IP (none without IP)."""
    draw = rng.random
    if kind == "none" and draw() < 0.5:
        return None
    events = [upload] if upload else []
    if ip:
        for _ in range(_below(draw, 3) or (0 if events else 1)):
            name = USER_EVENTS[_below(draw, len(USER_EVENTS))]
            events.append(_capture_event(draw, ip, name, submitted - HOUR - _below(draw, 30 * DAY), kind == "proxy"))
    estimated = None
    if kind == "estimated" or (kind == "ip" and draw() < 0.2):
        estimated = {"countryCode": place.country, "region": place.state, "city": place.city}
    return {"espIdentifier": f"user-{index * 7919 % 10_000_019}", "screenName": f"user_{rng.getrandbits(32):08x}",
            "ipCaptureEvents": events or None, "estimatedLocation": estimated}


def _capture_event(draw, ip, name, epoch, proxy):
    return {"ipAddress": ip, "eventName": name, "dateTime": _rfc3339(epoch), "possibleProxy": proxy,
            "port": 1024 + _below(draw, 64512) if draw() < 0.5 else None}


def _files(config, index, rng, upload):
    """The report's files and the truth about its inline pictures."""
    draw = rng.random
    low, high = config.files_per_report
    count = low + _below(draw, high - low + 1)
    media = []
    if draw() < config.media_fraction:
        count = max(count, 1)
        media = [_pick_media(config, rng, file_index) for file_index in range(min(count, 1 + (draw() < 0.3)))]
    files = []
    for file_index in range(count):
        content = _media_bytes(media[file_index], rng) if file_index < len(media) else None
        files.append(_file(rng, index, file_index, content, upload if draw() < 0.7 else None,
                           config.known_md5_fraction))
    return files, tuple(media)


def _pick_media(config, rng, file_index):
    chance = rng.random()
    new_fraction = 1 - config.known_media_fraction - config.benign_media_fraction
    if chance < config.known_media_fraction * config.video_media_fraction:
        return InlineMedia(file_index, "known", rng.choice(KNOWN_VIDEO_SEEDS), video=True)
    if chance >= 1 - new_fraction * config.video_media_fraction:
        return InlineMedia(file_index, "new", NEW_IMAGE_SEEDS_FROM + rng.getrandbits(40), video=True)
    if chance < config.known_media_fraction:
        return InlineMedia(file_index, "known", rng.choice(KNOWN_IMAGE_SEEDS))
    if chance < config.known_media_fraction + config.benign_media_fraction:
        return InlineMedia(file_index, "benign", rng.choice(BENIGN_IMAGE_SEEDS))
    return InlineMedia(file_index, "new", NEW_IMAGE_SEEDS_FROM + rng.getrandbits(40))


def demo_video_spec(seed):
    """The demo's videos: 4 s, 128x96, 8 frames/s, H.264 in MP4, a few tens of KB."""
    return VideoSpec(f"demo-video-{seed}", seconds=4.0, fps=8, size=(128, 96), bit_rate=200_000)


def _media_bytes(inline, rng):
    """A re-encoding of the picture (or video): bank pictures are cached per process, new ones drawn once."""
    if inline.video:
        spec = demo_video_spec(inline.seed)
        return encode_video(variant_spec(spec, rng.choice(VIDEO_VARIANT_KINDS), rng) if inline.kind == "known" else spec)
    picture = make_image(inline.seed, MEDIA_SIDE) if inline.kind == "new" else _bank_picture(inline.seed)
    return variant(picture, _weighted(rng.random, VARIANT_MIX, VARIANT_CUM)[0], rng)


def _file(rng, index, file_index, content, upload, known_md5_fraction):
    draw = rng.random
    public = draw() < 0.1
    return {
        "fileId": f"f-{index}-{file_index}",
        "fileName": f"{rng.getrandbits(48):012x}.{_extension(content)}",
        "fileViewedByEsp": _weighted(draw, VIEWED_MIX, VIEWED_CUM)[0],
        "publiclyAvailable": public if draw() < 0.8 else None,
        "locationOfFile": _file_location(rng) if public else None,
        "industryClassification": _weighted(draw, CLASSIFICATION_MIX, CLASSIFICATION_CUM)[0],
        "fileAnnotations": [FILE_ANNOTATIONS[_below(draw, len(FILE_ANNOTATIONS))]] if draw() < 0.08 else None,
        "originalFileHashes": _provided_hashes(rng, content, known_md5_fraction),
        "ipCaptureEvent": upload,
        "content": base64.b64encode(content).decode("ascii") if content else None,
        "contentUri": None,
    }


def _extension(content):
    if content and content[4:8] == b"ftyp":
        return "mp4"
    if content and content[:4] in (b"\x1a\x45\xdf\xa3", b"RIFF", b"GIF8"):
        return {b"\x1a\x45\xdf\xa3": "mkv", b"RIFF": "avi", b"GIF8": "gif"}[content[:4]]
    return "png" if content and content.startswith(PNG_SIGNATURE) else "jpg"


def _file_location(rng):
    path = f"{rng.getrandbits(32):08x}/{rng.getrandbits(32):08x}.jpg"
    if rng.random() < 0.2:
        places, cum_weights, _ = _place_sampler()
        host = str(_weighted(rng.random, places, cum_weights).ipv4[1 + _below(rng.random, 65534)])
    else:
        host = FILE_HOSTS[_below(rng.random, len(FILE_HOSTS))]
    return f"https://{host}/{path}"


def _provided_hashes(rng, content, known_md5_fraction):
    """The producer's hashes: MD5 always (of the bytes when inline; else random or a known bank MD5),
    sometimes SHA1, PDQ or a PHASH (half of those near a bank picture)."""
    if content:
        return [{"hashType": "MD5", "value": hashlib.md5(content).hexdigest()}]
    draw = rng.random
    if draw() < known_md5_fraction:
        md5 = known_md5s()[_below(draw, KNOWN_MD5_COUNT)]
    else:
        md5 = f"{rng.getrandbits(128):032x}"
    hashes = [{"hashType": "MD5", "value": md5}]
    if draw() < 0.2:
        hashes.append({"hashType": "SHA1", "value": f"{rng.getrandbits(160):040x}"})
    if draw() < 0.05:
        hashes.append({"hashType": "PDQ", "value": f"{rng.getrandbits(256):064x}"})
    if draw() < 0.05:
        hashes.append({"hashType": "PHASH", "value": _provided_phash(rng)})
    return hashes


def _provided_phash(rng):
    if rng.random() < 0.5:
        value = int(rng.choice(_bank_phashes()), 16)
        for bit in rng.sample(range(64), _below(rng.random, 7)):
            value ^= 1 << bit
        return f"{value:016x}"
    return f"{rng.getrandbits(64):016x}"


def malformed_payload(report, kind, rng):
    """`report` broken in the way `kind` (one of MALFORMED_KINDS) names."""
    if kind == "not_json":
        return rng.choice((b"ping", b"<html><body>502 Bad Gateway</body></html>", b"", b"reportId=abc&type=1"))
    if kind == "truncated_json":
        payload = encode_report(report)
        return payload[:rng.randint(1, len(payload) - 1)]
    if kind == "invalid_utf8":
        payload = encode_report(report)
        return payload.replace(b'"espName":"', b'"espName":"\xff\xfe\xc3\x28', 1)
    if kind == "json_array":
        return encode_report([report])
    broken = json.loads(encode_report(report))
    if kind == "missing_report_id":
        del broken["reportId"]
    elif kind == "unknown_incident_type":
        broken["incidentSummary"]["incidentType"] = rng.choice(("Child Exploitation (other)", "CSAM", ""))
    elif kind == "wrong_types":
        rng.choice((_wrong_esp_id, _wrong_age, _wrong_files))(broken)
    elif kind == "bad_submitted_at":
        broken["submittedAt"] = rng.choice(("23/11/2026 10:00", "2026-11-23T10:00:05", "2026-13-45T25:61:00Z",
                                            "yesterday", "1795000000"))
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return encode_report(broken)


def _wrong_esp_id(report):
    report["reporter"]["espId"] = 17


def _wrong_age(report):
    report["victims"] = [{"ageEstimate": "thirteen"}]


def _wrong_files(report):
    report["files"] = {"fileId": "f-1"}
