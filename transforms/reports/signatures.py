"""The content signature a report is bundled (and watched for spikes) under.

One deterministic choice among its files' signals, so that a report belongs to exactly one bundle:
  1. a bank entry it matched, `bank:<bank>:<externalId>` (perceptual matches to the same entry meet here);
  2. otherwise an exact hash, `<type>:<hex>` (MD5, SHA1, SHA256, ...);
  the lexicographically smallest within the first class that has one. Perceptual hashes without a bank
  match form no signature (near-duplicates are not transitive, so they cannot name a bundle).
A report the producer already bundled (`batchedReport`, e.g. VIRAL_POTENTIAL_MEME) is a bundle by
itself: signature `esp-batch:<reportId>`, never merged with other reports.
"""
import re

from transforms.matching.signals import canonical_hash_type

EXACT_SIGNAL_TYPES = frozenset({"MD5", "SHA1", "SHA224", "SHA256", "SHA384", "SHA512"})
ESP_BATCH = "esp-batch"


def content_signature(file_results, batched_reason, report_id):
    """The one signature a report is bundled under, or None when its files carry no usable signal."""
    if batched_reason:
        return f"{ESP_BATCH}:{report_id}"
    bank_entries = [f"bank:{match['bank']}:{match['externalId']}"
                    for file in file_results for match in file.get("matches") or () if match.get("externalId")]
    if bank_entries:
        return min(bank_entries)
    exact_hashes = [f"{kind.lower()}:{digest['value'].lower()}"
                    for file in file_results for digest in file.get("hashes") or ()
                    if (kind := canonical_hash_type(digest["signalType"])) in EXACT_SIGNAL_TYPES]
    return min(exact_hashes) if exact_hashes else None


def record_signature(record):
    """Signature of a routed record (schemas/routed_report.avsc): its files' hashes and matches, its batch
    reason. Bundles are stamped on routed records, so no stage takes a signature of an enriched report."""
    return content_signature(record.get("files") or [], record.get("batchedReason"), record["reportId"])


def signature_kind(signature):
    prefix = signature.split(":", 1)[0]
    return {"bank": "bank_entry", ESP_BATCH: "esp_batch"}.get(prefix, "exact_hash")


_EXACT_HASH = re.compile(r"([a-z0-9]+):((?:[0-9a-f]{2})+)")


def compact_signature(signature):
    """An exact hash's signature `<type>:<hex>` as bytes: `<type>:` then the digest's bytes (an MD5's 64 bytes
    as an object where its text takes 96); any other signature stays text. `expanded_signature` undoes it.
    For state holding a signature per report until its window fires (the hourly spike counts)."""
    exact = _EXACT_HASH.fullmatch(signature)
    return exact[1].encode("ascii") + b":" + bytes.fromhex(exact[2]) if exact else signature


def expanded_signature(compact):
    """The signature text of a `compact_signature`."""
    if isinstance(compact, str):
        return compact
    kind, _, digest = compact.partition(b":")  # the type has no colon; the digest's bytes may
    return f"{kind.decode('ascii')}:{digest.hex()}"
