"""Data protection (issue #7.4): no media bytes, media URIs or base64 blobs in any output or log of a run over
reports that carry media; trend tables carry no IP address or user identifier; dead letters keep the original
payload, only under dead_letter/; output files are readable by their owner only.

Uses the one whole-pipeline run over the hostile corpus (tests/hostile.py): its valid reports carry inline
JPEGs, media URIs, file locations and internet-detail URLs, and a third of its mutated ones carry media too.
"""
import base64
import io
import json
import re
import stat

import fastavro
import pyarrow.parquet as pq
import pytest

from tests import hostile

BASE64_BLOB = re.compile(rb"[A-Za-z0-9+/]{120,}={0,2}")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


@pytest.fixture(scope="module")
def whole_run():
    return hostile.hostile_run()


def media_secrets(corpus):
    """What must never leave the dead-letter store: media content (base64 and raw), URIs, file locations."""
    # the host alone may appear (a takedown notice names it by design); its URL path may not
    secrets = {hostile.MEDIA_MARKER_URI.encode(), f"{hostile.MEDIA_HOST}/".encode(), b"secret-media-path"}
    for _, _, payload in corpus:
        try:
            report = json.loads(payload.decode("utf-8"))
            files = report["files"]
        except (ValueError, KeyError, TypeError):
            continue
        for file in files if isinstance(files, list) else []:
            content = file.get("content") if isinstance(file, dict) else None
            if isinstance(content, str) and len(content) > 200:
                secrets.add(content[100:160].encode())
                try:
                    raw = base64.b64decode(content, validate=True)
                    secrets.add(raw[len(raw) // 2:len(raw) // 2 + 32])
                except ValueError:
                    pass
    return {secret for secret in secrets if len(set(secret)) > 8}  # not 'AAAA...' (zeros; the corpus pads with A)


def readable_forms(path):
    """The file's bytes, plus its decoded rows for Avro and Parquet (compressed on disk)."""
    data = path.read_bytes()
    forms = [data]
    if path.suffix == ".avro":
        forms.append(json.dumps(list(fastavro.reader(io.BytesIO(data))), default=str).encode())
    elif path.suffix == ".parquet":
        forms.append(json.dumps(pq.read_table(path).to_pylist(), default=str).encode())
    return forms


def blobs(data):
    """base64-looking runs that are not a single repeated character (the corpus pads fields with 'AAAA...')."""
    return [m for m in BASE64_BLOB.findall(data) if len(set(m)) > 8]


RESTRICTED = ("dead_letter", "notices")  # the two outputs that may hold payloads (dead letters) and URLs (notices)


def outputs(out, include_restricted=False):
    return [path for path in out.rglob("*") if path.is_file()
            and (include_restricted or path.relative_to(out).parts[0] not in RESTRICTED)]


def test_no_media_bytes_uris_or_base64_in_any_output_outside_the_restricted_ones(whole_run):
    out, secrets = whole_run["out"], media_secrets(whole_run["corpus"])
    assert len(secrets) > 20  # the corpus does carry media
    files = outputs(out)
    assert {path.relative_to(out).parts[0] for path in files} >= {"routed", "trends", "bundles", "summary.json"}
    for path in files:
        forms = readable_forms(path)
        for data in forms:
            for secret in secrets:
                assert secret not in data, (path, secret[:40])
        # base64 runs: in the rows (Parquet's footer legitimately holds its Arrow schema in base64)
        assert not blobs(forms[-1]), (path, blobs(forms[-1])[0][:60])


def test_no_media_in_logs_or_console_output(whole_run):
    secrets = media_secrets(whole_run["corpus"])
    logs = "\n".join(whole_run["logs"]).encode("utf-8", "backslashreplace")
    assert whole_run["logs"], "the run's logs were captured"
    for stream in (logs, whole_run["stdio"]):
        for secret in secrets:
            assert secret not in stream, secret[:40]
        assert not blobs(stream), blobs(stream)[0][:60]


def test_trend_tables_carry_no_ip_address_or_user_identifier(whole_run):
    out = whole_run["out"]
    identifiers = set()
    for _, _, payload in whole_run["corpus"]:
        try:
            user = json.loads(payload.decode("utf-8"))["personOrUserReported"]
            identifiers |= {user.get("espIdentifier"), user.get("screenName")} - {None}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    identifiers = {value for value in identifiers if isinstance(value, str) and len(value) > 3}
    assert len(identifiers) > 50
    tables = list((out / "trends").rglob("*.parquet"))
    assert tables
    for path in tables:
        table = pq.read_table(path)
        assert not {"ip", "ipAddress", "espIdentifier", "screenName", "user"} & set(table.column_names)
        for row in table.to_pylist():
            for value in row.values():
                if isinstance(value, str):
                    assert not IPV4.search(value) and ":" not in value, (path, value)
                    assert value not in identifiers, (path, value)


def test_dead_letters_keep_the_payload_only_under_dead_letter(whole_run):
    out, corpus = whole_run["out"], whole_run["corpus"]
    letters = [letter for records in hostile.read_jsonl(out / "dead_letter").values() for letter in records]
    with_media = [letter for letter in letters if hostile.MEDIA_HOST in letter["payload"]]
    assert with_media, "some dead letters carry media-bearing payloads (by design: they must be replayable)"
    assert all(hostile.letter_payload(letter) in {hostile.files_source_letter_payload(p) for _, _, p in corpus}
               for letter in letters)
    # nothing of a dead letter's payload appears in any other output
    others = b"".join(form for path in outputs(out) for form in readable_forms(path))
    for letter in letters:
        marker = f'"reportId": {json.dumps(letter["reportId"])}'.encode() if letter["reportId"] else None
        if marker:
            assert marker not in others, letter["reportId"]
    for path in outputs(out, include_restricted=True):
        if path.suffix == ".jsonl" and "dead_letter" not in path.parts:
            assert b'"payload"' not in path.read_bytes(), path


def test_notices_hold_the_url_to_remove_but_no_media_bytes_or_media_uri(whole_run):
    out, corpus = whole_run["out"], whole_run["corpus"]
    files = list((out / "notices").rglob("*.jsonl")) + list((out / "notices").rglob("*.csv"))
    assert files, "the hostile corpus calls for notices"
    data = b"".join(path.read_bytes() for path in files)
    assert f"{hostile.MEDIA_HOST}/".encode() in data  # the URL the host needs, by design
    media = {secret for secret in media_secrets(corpus) if not secret.startswith(f"{hostile.MEDIA_HOST}/".encode())}
    for secret in media:
        assert secret not in data, secret[:40]
    assert not blobs(data) and b"contentUri" not in data and b'"payload"' not in data


def test_outputs_are_readable_by_their_owner_only(whole_run):
    out = whole_run["out"]
    loose = [(str(path.relative_to(out)), oct(stat.S_IMODE(path.stat().st_mode)))
             for path in [out, *out.rglob("*")] if stat.S_IMODE(path.stat().st_mode) & 0o077]
    assert not loose, loose[:5]
