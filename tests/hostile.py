"""Hostile reports: hypothesis strategies, a deterministic hostile corpus, and the stage chain as the pipeline runs it.

`run_stages(payload)` pushes one message through the real stage functions (ReportValidator/decode_message,
then the enrichment chain of transforms/reports/enrichment.py with the routed schema check) with the exception
handling each stage has in the pipeline, then through what the pipeline does with the result at its
boundaries (Beam's FastPrimitivesCoder between stages, the Avro sink, the dead-letter JSON Lines sink).
It returns ("routed", record) or ("dead_letter", letter); any exception escaping it would crash the job.

`hostile_corpus()` is the fixed corpus of the one whole-pipeline run (tests/test_hostile_input.py and
friends), built with `random.Random(seed)`: exotic inputs of every kind. Inputs that once crashed a whole run
(a recursion or integer-digit limit in the JSON parser, a timestamp overflowing with its offset, a lone
surrogate reaching a UTF-8 writer) are kept in `ONCE_CRASHED` and tested at the stage level.
"""
import base64
import copy
import functools
import io
import json
import random

import fastavro
from apache_beam.coders.coders import FastPrimitivesCoder
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from schemas import avro_schema
from tests.conftest import MAXMIND, example_report
from transforms.reports.avro_validation import InvalidRecord, compile_validator
from transforms.dead_letters import dead_letter, dead_letter_from_failure, original_report_json
from transforms.location.geoip import GeoLocator
from transforms.matching.matcher import HashMatcher
from transforms.plumbing.bounded_lines import HEAD_BYTES
from transforms.reports.enrichment import routed_record, with_hashes, with_location, with_routing
from transforms.plumbing.packed_records import pack_deflated, unpack
from transforms.location.jurisdiction_rules import JurisdictionRules
from transforms.reports.validation import DEFAULT_MAX_MESSAGE_BYTES, ReportValidator, decode_message, report_id_of

CITY_DB = str(MAXMIND / "GeoIP2-City-Test.mmdb")
INCIDENT_TYPES = [
    "Child Pornography (possession, manufacture, and distribution)", "Child Sex Trafficking",
    "Child Sex Tourism", "Child Sexual Molestation", "Misleading Domain Name",
    "Misleading Words or Digital Images on the Internet", "Online Enticement of Children for Sexual Acts",
    "Unsolicited Obscene Material Sent to a Child"]
# places in MaxMind's City test db, and exotic addresses of every kind
PLACED_IPS = ["81.2.69.142", "81.2.69.160", "216.160.83.56", "2a02:d300::1", "89.160.20.112", "::ffff:81.2.69.142"]
EXOTIC_IPS = ["10.1.2.3", "127.0.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "169.254.1.1", "100.64.0.1",
              "192.0.2.1", "::", "::1", "fe80::1%eth0", "fe80::1", "ff02::1", "fc00::1", "2001:db8::1", "2002::1",
              "1.2.3", "256.1.1.1", "01.2.3.4", "1.2.3.4.5", "", " ", "not an ip", "١٢٣.١.١.١", "1.2.3.4\x00",
              "::ffff:10.0.0.1", "::ffff:999.1.1.1", "1:2:3:4:5:6:7:8:9", "x" * 5000, "8.8.8.8/32",
              "[2001:db8::1]", "0x51.2.69.142", "81.2.69.142 ", "\u200b81.2.69.142"]
MEDIA_MARKER_URI = "file:///var/tipline/media/"
MEDIA_HOST = "files.example.net"


def benign_image(seed, size=64, fmt="PNG"):
    """A small synthetic picture (gradient and rectangles): benign, deterministic for a seed."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for step in range(size):
        draw.line([(0, step), (size - 1, step)], fill=(step * 4 % 256, seed * 37 % 256, 255 - step))
    corner = seed * 13 % (size // 2)
    draw.rectangle([corner, corner // 2, corner + size // 4, corner // 2 + size // 3], fill=(seed * 53 % 256, 40, 90))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@functools.cache
def bomb_png():
    """An 8000x8000 1-bit PNG (64 megapixels, ~8 KB): over the 40 Mpx limit, tiny on the wire."""
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def b64(data):
    return base64.b64encode(data).decode("ascii")


def contract_report(rng, report_id):
    """A valid contract report with random but plausible content (no media)."""
    report = example_report()
    report["reportId"] = report_id
    report["incidentSummary"]["incidentType"] = rng.choice(INCIDENT_TYPES)
    report["submittedAt"] = f"2026-11-23T{rng.randrange(10, 14):02d}:{rng.randrange(60):02d}:00Z"
    ip = rng.choice(PLACED_IPS)
    report["files"][0]["ipCaptureEvent"]["ipAddress"] = ip
    report["files"][0]["fileId"] = f"{report_id}-f1"
    report["files"][0]["contentUri"] = f"{MEDIA_MARKER_URI}{report_id}.jpg"
    report["files"][0]["locationOfFile"] = f"https://{MEDIA_HOST}/{report_id}.jpg"
    report["internetDetails"][0]["url"] = f"https://{MEDIA_HOST}/{report_id}.jpg"
    report["personOrUserReported"]["espIdentifier"] = f"user-{report_id}"
    report["personOrUserReported"]["screenName"] = f"screen-{report_id}"
    return report


# --- mutations: each takes (rng, report) and returns the message bytes ---------------------------

def _dump(report):
    return json.dumps(report).encode("utf-8")


def json_paths(value, path=()):
    """Every (path) into a JSON value, containers included."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, path + (index,))


def _set(report, path, value):
    target = report
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _delete(report, path):
    target = report
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]


WRONG_VALUES = [None, True, 0, -1, 2**31, 2**63, 1.5, float("inf"), "", "x", [], {}, [None], {"a": 1}, "\x00",
                "NaN", [[[]]], "2026-13-45T99:99:99Z"]


def drop_field(rng, report):
    paths = [p for p in json_paths(report) if p]
    _delete(report, rng.choice(paths))
    return _dump(report)


def extra_field(rng, report):
    paths = [p for p in json_paths(report) if isinstance(_get(report, p), dict)]
    _get(report, rng.choice(paths))[rng.choice(["extra", "__proto__", "_routing", "_geo", "", "\x00"])] = \
        rng.choice(WRONG_VALUES)
    return _dump(report)


def _get(report, path):
    for step in path:
        report = report[step]
    return report


def wrong_type(rng, report):
    paths = [p for p in json_paths(report) if p]
    _set(report, rng.choice(paths), rng.choice(WRONG_VALUES))
    return json.dumps(report).encode("utf-8")  # allow_nan: NaN/Infinity literals on the wire too


def huge_string(rng, report):
    field = rng.choice([("reportId",), ("reporter", "espName"), ("incidentSummary", "escalateToHighPriority"),
                        ("personOrUserReported", "screenName"), ("files", 0, "fileName")])
    _set(report, field, "A" * rng.choice([10_000, 200_000, 1_000_000]))
    return _dump(report)


def huge_list(rng, report):
    field = rng.choice([("victims",), ("incidentSummary", "reportAnnotations"), ("internetDetails",),
                        ("personOrUserReported", "ipCaptureEvents")])
    item = {"victims": {"ageEstimate": 12}, "reportAnnotations": "spam", "internetDetails": {"kind": "email"},
            "ipCaptureEvents": {"ipAddress": "10.0.0.1", "eventName": "Login"}}[field[-1]]
    _set(report, field, [item] * rng.choice([1000, 20_000]))
    return _dump(report)


def moderately_deep(rng, report):
    """Nesting the JSON decoder accepts (a few hundred levels), in an extra field or a typed one."""
    depth = rng.choice([50, 200, 500])
    nested = 0
    for _ in range(depth):
        nested = [nested] if rng.random() < 0.5 else {"a": nested}
    _set(report, rng.choice([("extra",), ("victims",), ("files", 0, "fileAnnotations")]), nested)
    return _dump(report)


def invalid_utf8(rng, report):
    data = _dump(report)
    cut = rng.randrange(len(data))
    # (not b"\xed\xa0\x80", an encoded surrogate: it has its own test, ONCE_CRASHED["encoded_surrogate"])
    return data[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xf8\x88\x80\x80\x80", b"\x80"]) + data[cut:]


def nul_bytes(rng, report):
    field = rng.choice([("reportId",), ("reporter", "espId"), ("files", 0, "fileName")])
    _set(report, field, "nul\x00inside\x00")
    data = _dump(report)
    return data if rng.random() < 0.5 else data.replace(b",", b",\x00", 1)  # raw NUL: not JSON


def far_time(rng, report):
    field = rng.choice([("submittedAt",), ("incidentSummary", "incidentDateTime"),
                        ("files", 0, "ipCaptureEvent", "dateTime")])
    _set(report, field, rng.choice(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z",
                                    "1969-12-31T23:59:59.999999Z", "2262-04-11T23:47:16Z", "1677-09-21T00:12:43Z",
                                    "2026-02-30T10:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T10:00:60Z",
                                    "2026-11-23T10:00:00.1234567890123Z", "2026-11-23 10:00:00z",
                                    "2026-11-23T10:00:00+23:59", "+2026-11-23T10:00:00Z", "2026-W47-1"]))
    return _dump(report)


def exotic_ip(rng, report):
    report["files"][0]["ipCaptureEvent"]["ipAddress"] = rng.choice(EXOTIC_IPS)
    report["files"][0]["ipCaptureEvent"]["port"] = rng.choice([None, 0, 65535, 70000, -1])
    report["personOrUserReported"]["ipCaptureEvents"] = [
        {"ipAddress": rng.choice(EXOTIC_IPS), "eventName": "Login", "dateTime": rng.choice(
            [None, "garbage", "2026-11-23T10:00:00Z"])} for _ in range(rng.randrange(3))]
    if rng.random() < 0.3:
        report["personOrUserReported"]["estimatedLocation"] = {"countryCode": rng.choice(
            ["../", "US", "ZZ", "A1", "gb", " ", "../../etc", "US-CA/../x", "\u00e9"]),
            "region": rng.choice([None, "CA", "../CA", "x" * 300]), "city": rng.choice([None, "Los Angeles", "/"])}
    return _dump(report)


def media_content(rng, report):
    """Inline media of every bad kind (and some good), with and without provided hashes."""
    kind = rng.choice(["image", "jpeg", "not_image", "truncated", "bomb", "not_base64", "empty", "nul"])
    data = {
        "image": lambda: benign_image(rng.randrange(1000)),
        "jpeg": lambda: benign_image(rng.randrange(1000), fmt="JPEG"),
        "not_image": lambda: b"just some text, not a picture " * 20,
        "truncated": lambda: benign_image(rng.randrange(1000), fmt="JPEG")[:300],
        "bomb": bomb_png,
        "not_base64": None, "empty": None,
        "nul": lambda: b"\x00" * 4096,
    }[kind]
    file = report["files"][0]
    file["contentUri"] = None
    file["content"] = (b64(data()) if data else {"not_base64": "***not base64***", "empty": ""}[kind])
    if rng.random() < 0.5:
        file["originalFileHashes"] = [{"hashType": rng.choice(["MD5", "md5", "SHA1", "PDQ", "???"]),
                                       "value": rng.choice(["9e107d9d372bb6826bd81d3542a419d6", "zz", "", "0" * 64])}]
    return _dump(report)


def many_files(rng, report):
    """Hundreds of files (provided hashes only): the 10,000-file case is test_hostile_input's slow test."""
    file = report["files"][0]
    file.update(content=None, contentUri=None)
    report["files"] = [dict(file, fileId=f"m{i}") for i in range(rng.choice([200, 500]))]
    return _dump(report)


def not_an_object(rng, report):
    return rng.choice([b"[]", b"null", b"42", b'"a string"', b"true", b"", b" ", b"{", b"{}", b"{\"reportId\": 1}",
                       b"\xef\xbb\xbf" + _dump(report), _dump(report) + b" trailing", b"\x00" * 10])


MUTATIONS = [drop_field, extra_field, wrong_type, huge_string, huge_list, moderately_deep, invalid_utf8,
             nul_bytes, far_time, exotic_ip, media_content, many_files, not_an_object]

# Inputs that once stopped a whole run; each must now end as a dead letter.
ONCE_CRASHED = {
    "deep_nesting": b"[" * 100_000,                                              # was a RecursionError
    "deep_nesting_in_field": b'{"reportId": "d", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "huge_integer": b'{"reportId": "i", "n": ' + b"1" * 5000 + b"}",            # was Python's int digit limit
    "year_1_with_offset": None,                                                  # was an OverflowError
    "year_9999_with_offset": None,
    "lone_surrogate_id": None,                                                   # was a UnicodeEncodeError
    "lone_surrogate_extra": None,
    # not UTF-8, so dead-lettered, but the reportId was re-read with json.loads(bytes), which let the encoded
    # surrogate through into the dead letter's reportId, and writing that crashed
    "encoded_surrogate": b'{"reportId": "x\xed\xa0\x80", "submittedAt": "2026-11-23T10:00:00Z"}',
}


def once_crashed(name):
    if ONCE_CRASHED.get(name) is not None:
        return ONCE_CRASHED[name]
    report = example_report()
    report["reportId"] = f"crash-{name}"
    if name == "year_1_with_offset":
        report["submittedAt"] = "0001-01-01T00:30:00+01:00"
    elif name == "year_9999_with_offset":
        report["submittedAt"] = "9999-12-31T23:30:00-01:00"
    elif name == "lone_surrogate_id":
        report["reportId"] = "crash-\ud800"
    elif name == "lone_surrogate_extra":
        report["note"] = "\udc80"
    return json.dumps(report).encode("ascii")  # json escapes the surrogate as \ud800: valid ASCII bytes


def hostile_corpus(seed=7, valid=60, per_mutation=14):
    """[(kind, report id or None, payload bytes)]: valid reports, redeliveries and every mutation kind."""
    rng = random.Random(seed)
    corpus = []
    for number in range(valid):
        report = contract_report(rng, f"ok-{number:03d}")
        if number % 3 == 0:
            report["files"][0].update(contentUri=None, content=b64(benign_image(number, fmt="JPEG")))
        if number % 5 == 1:  # no location at all: UNKNOWN, and a takedown notice for its public file
            report["files"][0]["ipCaptureEvent"] = None
            report["personOrUserReported"].update(ipCaptureEvents=[], estimatedLocation=None)
        corpus.append(("valid", report["reportId"], _dump(report)))
    corpus += [("redelivery", rid, payload) for kind, rid, payload in corpus[::7]]
    for mutation in MUTATIONS:
        for number in range(per_mutation):
            report = contract_report(rng, f"{mutation.__name__}-{number:03d}")
            corpus.append((mutation.__name__, report["reportId"], mutation(rng, copy.deepcopy(report))))
    corpus.append(("oversize", None, b'{"reportId": "big", "pad": "' + b"A" * 1_100_000 + b'"}'))
    rng.shuffle(corpus)
    # ReadFromText splits on newlines: keep payloads newline-free (a raw newline cannot be in JSON anyway)
    return [(kind, rid, payload.replace(b"\n", b" ").replace(b"\r", b" ")) for kind, rid, payload in corpus]


# --- the stage chain, with the pipeline's own exception handling ---------------------------------

@functools.cache
def _stages():
    from transforms.demo.packaged import packaged

    return (ReportValidator(), HashMatcher.from_banks([packaged("demo-bank.csv")]), GeoLocator(CITY_DB),
            JurisdictionRules.load(), compile_validator(avro_schema("routed_report")))


CODER = FastPrimitivesCoder()


def _sink_dead_letter(letter):
    """What WriteDeadLetters does with it: the coder, then a JSON line (ensure_ascii=False, UTF-8)."""
    CODER.encode(letter)
    json.dumps(letter, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return "dead_letter", letter


def _failure(stage, report, error):
    return dead_letter_from_failure(stage)((report, (type(error), error, None)))


def crossed_a_grouping(record, like):
    """A batch grouping's copy of a report or routed record (packed `json_exact`, deflated against the
    example record of the schema `like`); a copy that differs (a NaN written as null, a tuple come back a
    list) would be a silently wrong record."""
    back = unpack(pack_deflated(record, like, json_exact=True))
    if back != record:
        raise AssertionError(f"a packed record came back different: {record!r:.200}")
    return back


def run_stages(payload, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
    """("routed", record) | ("dead_letter", letter); an escaping exception is a job crash."""
    validator, matcher, locator, rules, check_routed = _stages()
    try:
        report = decode_message(payload, max_message_bytes)
        validator.validate(report)
    except InvalidRecord as error:
        return _sink_dead_letter(dead_letter("parse", str(error), payload, report_id_of(payload)))
    CODER.encode(report)  # DedupRedeliveries' shuffle (streaming, one key per reportId)
    crossed_a_grouping(report, "report")  # DedupRedeliveries' shuffle (batch)
    steps = (("enrich_hashes", lambda r: with_hashes([r], matcher)[0]),  # each stage's exception handling
             ("enrich_geo", lambda r: with_location(r, locator)),
             ("assign_jurisdiction", lambda r: with_routing(r, rules)))
    for stage, step in steps:
        try:
            report = step(report)
        except Exception as error:
            return _sink_dead_letter(_failure(stage, report, error))
    try:
        record = routed_record(report, check_routed)
    except (InvalidRecord, KeyError, TypeError, AttributeError) as error:  # _ToRoutedRecordFn's handling
        return _sink_dead_letter(dead_letter("route", f"routed record could not be built: {error}"[:500],
                                             original_report_json(report), report.get("reportId")))
    CODER.encode(record)
    crossed_a_grouping(record, "routed_report")  # StampBundleIds' shuffle (batch)
    fastavro.writer(io.BytesIO(), avro_schema("routed_report"), [record])  # the Avro sink
    return "routed", record


@functools.cache
def corpus_outcomes(max_message_bytes=1_000_000):
    """[(kind, payload, outcome, value)] of `run_stages` over the hostile corpus (computed once per process)."""
    return [(kind, payload, *run_stages(payload, max_message_bytes)) for kind, _, payload in hostile_corpus()]


# --- hypothesis strategies ---------------------------------------------------------------------

def json_values_of(text):
    leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False), text(max_size=30))
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(text(max_size=10), inner, max_size=4), max_leaves=20)


def unicode_text(**kwargs):
    """Text without lone surrogates: those have their own tests (`ONCE_CRASHED`)."""
    return st.text(alphabet=st.characters(blacklist_categories=("Cs",)), **kwargs)


json_values = json_values_of(unicode_text)
json_values_with_surrogates = json_values_of(st.text)


@st.composite
def mutated_reports(draw, values=json_values, text=unicode_text):
    """Bytes: a contract report with one to three mutations of any kind (the fast, memory-light ones)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    report = contract_report(rng, draw(text(min_size=1, max_size=20)))
    names = draw(st.lists(st.sampled_from(["drop", "extra", "wrong", "json", "far_time", "exotic_ip", "utf8",
                                           "nul", "media"]), min_size=1, max_size=3))
    payload = None
    for name in names:
        if name == "json":  # a hypothesis-drawn JSON value anywhere
            paths = [p for p in json_paths(report) if p]
            _set(report, draw(st.sampled_from(paths)), draw(values))
        elif name == "media":
            try:
                payload = media_content(rng, report)
            except (KeyError, IndexError, TypeError):  # an earlier mutation removed the files it fills
                continue
            report = json.loads(payload)
        else:
            mutation = {"drop": drop_field, "extra": extra_field, "wrong": wrong_type, "far_time": far_time,
                        "exotic_ip": exotic_ip, "utf8": invalid_utf8, "nul": nul_bytes}[name]
            try:
                payload = mutation(rng, report)
            except (KeyError, IndexError, TypeError):  # an earlier mutation removed what this one edits
                continue
            try:  # strict UTF-8 first: json.loads(bytes) would let encoded surrogates through
                report = json.loads(payload.decode("utf-8"))
            except ValueError:  # the mutation broke the JSON itself (invalid UTF-8, a raw NUL): send as is
                return payload
    return _dump(report)


# --- the one whole-pipeline run over the hostile corpus (shared by several test modules) ----------

def once_per_session(name, produce):
    """`(root, produce(root))`, produce run once per test session even across xdist workers (its result must
    be JSON-able; its files stay under root). Without xdist, once per process."""
    import fcntl
    import os
    import pathlib
    import tempfile

    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None:
        root = pathlib.Path(tempfile.mkdtemp(prefix=f"tipline-{name}-"))
        return root, produce(root)
    root = pathlib.Path(tempfile.gettempdir()) / f"tipline-{name}-{uid}"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "result.json"
        if done.exists():
            return root, json.loads(done.read_text())
        if root.exists():  # a worker failed half way: start over
            import shutil
            shutil.rmtree(root)
        root.mkdir()
        result = produce(root)
        done.write_text(json.dumps(result, default=str))  # routed records' instants are datetimes
        return root, result


@functools.cache
def hostile_run():
    """Runs the whole pipeline once per test session over `hostile_corpus()` on `--source files`.

    Returns a dict: out (Path), summary, corpus, logs (every log record's message at DEBUG and up),
    stdio (what the run wrote to file descriptors 1 and 2, as text).
    """
    root, result = once_per_session("hostile", _hostile_run)
    return {**result, "out": root / "out", "corpus": hostile_corpus(), "stdio": result["stdio"].encode()}


def _hostile_run(root):
    import logging
    import os

    from pipelines.tipline_pipeline import run

    corpus = hostile_corpus()
    (root / "reports.jsonl").write_bytes(b"".join(payload + b"\n" for _, _, payload in corpus))
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            try:
                records.append(record.getMessage())
            except Exception:  # a record whose arguments do not format: keep its raw parts
                records.append(f"{record.msg!r} {record.args!r}")

    handler, logger = Keep(level=logging.DEBUG), logging.getLogger()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    stdio_path = root / "stdio.txt"
    saved = [os.dup(1), os.dup(2)]
    with open(stdio_path, "wb") as stdio:
        os.dup2(stdio.fileno(), 1)
        os.dup2(stdio.fileno(), 2)
        try:
            summary = run(["--source", "files", "--input", str(root / "reports.jsonl"), "--output",
                           str(root / "out"), "--geoip-city-db", CITY_DB, "--demo-data",
                           "--max-message-bytes", str(1_000_000)])
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logger.removeHandler(handler)
            logger.setLevel(old_level)
    return {"summary": summary, "logs": records, "stdio": stdio_path.read_bytes().decode("utf-8", "replace")}


def read_routed(out):
    """{folder name: [records]} of every routed Avro file."""
    found = {}
    for path in sorted((out / "routed").rglob("*.avro")):
        with path.open("rb") as handle:
            found.setdefault(path.parent.name, []).extend(fastavro.reader(handle))
    return found


def read_jsonl(folder):
    """{folder name: [records]} of every JSON Lines file below `folder`."""
    found = {}
    for path in sorted(folder.rglob("*.jsonl")):
        found.setdefault(path.parent.name, []).extend(json.loads(line) for line in path.read_text().splitlines())
    return found


def files_source_letter_payload(payload, max_message_bytes=1_000_000):
    """What a dead letter of the files source holds of `payload`: all of it, or the first bytes of a line
    too long to read whole."""
    return payload if len(payload) <= max_message_bytes else payload[:HEAD_BYTES]


def letter_payload(letter):
    """A dead letter's payload as the original bytes."""
    if letter["payloadEncoding"] == "base64":
        return base64.b64decode(letter["payload"])
    return letter["payload"].encode("utf-8")
