"""Incident bundles: reports whose files share a content signature, for as long as the incident goes on.

A report's signature (transforms/reports/signatures.py) is one deterministic choice among its files'
signals, so that a report belongs to exactly one bundle: a bank entry it matched, else an exact hash; a
report the producer already bundled (`batchedReport`) is a bundle by itself.

Incidents (the semantics): taking a signature's reports in event-time order, a report seen less than the
gap (`--bundle-gap-hours`, default 24) after the signature's previous report continues its incident;
otherwise it opens a new one. So a viral repeat going on across hours and days is one bundle, and the same
content seen again after a quiet day is a new one. The bundle id is a digest of (signature, event time of
the incident's first report): it depends only on earlier reports, so every routed report carries it, and it
stays the same for the whole incident.

How: `StampBundleIds` stamps routed records (BuildRoutedRecords made them; RouteToSinks writes them
stamped). Batch groups each signature's records (packed as bytes, with the unsigned records in the same
grouping under their reportIds) and walks them in event-time order.
Streaming keeps, per signature, the open incident (first and last event time) and stamps each report as it
arrives, so routing never waits (one key per signature; on the DirectRunner, signatures spread over 1,024
keys holding packed records, the same decisions): the same ids as batch when a signature's reports arrive in event-time
order (as a live stream and a replay in time order do). Out of order, a report joins the open incident when
it is within the gap of that incident's last report, else opens one; so a report arriving before an
earlier one can give a different first report (id) or join an incident batch would have split. (Buffering
until the watermark would make the order exact, but the local DirectRunner does not hold the watermark
for user timers, so buffered reports reach the trend windows late.) A signature silent for the gap plus the
allowed lateness is forgotten; a report after that opens a new incident. `BundleRepeats` groups routed
records by bundle id in session windows of the same gap (in batch, by bundle id): window_start is the first
report, window_end the last report plus the gap. Every signature forms a bundle, a single report included; a late
report can turn a bundle of one into a repeat (late pane). Bundles carry counts of distinct users and ESPs,
never the user ids themselves.

A report or record whose signature, sighting or bundle row cannot be made, or a row the Parquet sink
refuses, fails alone as a side-stage dead letter `stage=bundles` (transforms/dead_letters.py): a record whose
signature fails is routed all the same, without a bundle id.
"""
import collections
import dataclasses
import functools
import hashlib
import pickle
import re
import struct

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.tables import BUNDLE_SCHEMA
from transforms.dead_letters import FAILURES, WriteSideStageFailures, failed
from transforms.plumbing.direct_runner import (expose_input_watermark, hold_watermark_at_user_timers, input_watermark,
                                               on_the_direct_runner)
from transforms.plumbing.event_windows import (ON_TIME_PANE, TallyCombineFn, in_global_window, in_global_window_at,
                                              late_firing_windows, pane_columns, utc_of_micros)
from transforms.plumbing.distinct import DistinctDigests, pair_digest64
from transforms.plumbing.metrics import counter
from transforms.plumbing.local_windows import HeldAsIs
from transforms.plumbing.packed_buckets import (PackedIntoBuckets, append_record, bucket_of, digest_of, held_half,
                                               iter_records, move_timer_earlier, pickled, record_offset, reset_timer)
from transforms.plumbing.packed_records import pack_deflated, unpack
from transforms.plumbing.windowed_files import GROUPED_AS_LINES, ParquetSink, WriteWindowedFiles
from transforms.reports.signatures import record_signature, signature_kind

STAGE = "bundles"
DEFAULT_GAP_SECONDS = 24 * 3600

def bundle_id(signature, first_micros):
    """Deterministic from (signature, event time of the incident's first report, in microseconds)."""
    digest = hashlib.sha256(f"{signature}@{first_micros}".encode("utf-8")).hexdigest()
    return f"bnd-{digest[:24]}"


def next_incident(incident, micros, gap_micros):
    """The signature's incident (first, last event micros) after a report at `micros`; None: none open."""
    if incident is None or micros - incident[1] >= gap_micros:
        return micros, micros
    return incident[0], max(incident[1], micros)


def stamped(record, signature, incident):
    """A copy of `record` with the bundle id of `signature`'s `incident` (the signature it was keyed by)."""
    return {**record, "bundleId": bundle_id(signature, incident[0])}


def stamp_in_time_order(signature, timed_records, gap_micros):
    """One signature's (micros, packed routed record) pairs, unpacked and stamped in event-time order, each at
    its event time in the global window. The signature is the grouping's key, not computed again per record;
    an incident's records share its bundle id, computed once."""
    out, incident, bundle = [], None, None
    for micros, packed in sorted(timed_records, key=lambda pair: pair[0]):
        opened = next_incident(incident, micros, gap_micros)
        if incident is None or opened[0] != incident[0]:
            bundle = bundle_id(signature, opened[0])
        incident = opened
        record = unpack(packed)  # a copy of its own: stamped in place
        record["bundleId"] = bundle
        out.append(in_global_window_at(record, micros))
    return out


def unstamped(timed_records):
    """Records without a signature, unpacked as they were, at their event times."""
    return [in_global_window_at(unpack(packed), micros) for micros, packed in timed_records]


def signature_or_failure(record):
    """(the routed record's bundle signature or None, None) or, when the signature fails, (None, the failure
    for the failures output): bundling must not cost a report its routing."""
    try:
        return record_signature(record), None
    except Exception as error:
        return None, failed(record, error)


@beam.typehints.with_output_types(beam.typehints.KV[str, beam.typehints.Any])
class _SplitBySignatureFn(beam.DoFn):
    """(signature, (event micros, record)) for routed records with a signature; the others pass on untouched
    (a record whose signature fails too, and its failure to the failures output)."""
    UNSIGNED = "unsigned"

    def process(self, record, timestamp=beam.DoFn.TimestampParam):
        signature, failure = signature_or_failure(record)
        if failure is not None:
            yield failure
        if signature is None:
            yield beam.pvalue.TaggedOutput(self.UNSIGNED, record)
        else:
            yield signature, (timestamp.micros, record)


@beam.typehints.with_output_types(beam.typehints.KV[beam.typehints.Any, beam.typehints.Tuple[int, bytes]])
class _KeyPackedBySignatureFn(beam.DoFn):
    """Batch: ((signature, True), (event micros, deflated packed routed record)); a record without a signature (its
    signature failing too, the failure to the failures output) is keyed ((reportId, False), ...) and passes
    the same grouping untouched.

    Why one grouping for both: a Flatten of the stamped and the unsigned records would make the local runner
    write every stamped record out and read it back (Beam's dict coder, twice); and packed records
    (transforms/plumbing/packed_records.py) cross the grouping as bytes, not through that coder. The key is
    hinted `Any` so its coder is Beam's compiled one: a `str` hint picks StrUtf8Coder, which runs in Python.
    A routed record passed the schema check (`BuildRoutedRecords`), so it packs `json_exact`."""

    def process(self, record, stamped=beam.DoFn.WindowedValueParam):
        signature, failure = signature_or_failure(record)
        if failure is not None:
            yield failure
        timed = stamped.timestamp_micros, pack_deflated(record, "routed_report", json_exact=True)
        yield ((signature, True), timed) if signature is not None else ((record.get("reportId"), False), timed)


class _StampSignatureTimelineFn(beam.DoFn):
    """Batch: one signature's records at once, stamped in event-time order; unsigned ones as they were."""

    def __init__(self, gap_seconds):
        self.gap_micros = int(gap_seconds * 1_000_000)
        self.stamped = counter("bundle_stamped")

    def process(self, keyed):
        (signature, signed), timed_records = keyed
        if not signed:
            yield from unstamped(timed_records)
            return
        out = stamp_in_time_order(signature, list(timed_records), self.gap_micros)
        self.stamped.inc(len(out))
        yield from out


class _StampIncidentsFn(beam.DoFn):
    """Streaming: per signature, the open incident (first and last event micros); each record stamped as it
    arrives, so routing never waits. A signature silent for the gap plus the allowed lateness is forgotten
    (until then a late report may still continue the incident)."""
    INCIDENT = ReadModifyWriteStateSpec("incident", coders.TupleCoder([coders.VarIntCoder(), coders.VarIntCoder()]))
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, gap_seconds, allowed_lateness_seconds):
        self.gap_micros = int(gap_seconds * 1_000_000)
        self.keep_micros = self.gap_micros + int(allowed_lateness_seconds * 1_000_000)
        self.stamped = counter("bundle_stamped")

    def process(self, keyed, incident_state=beam.DoFn.StateParam(INCIDENT), forget=beam.DoFn.TimerParam(FORGET)):
        signature, (micros, routed) = keyed
        incident = next_incident(incident_state.read(), micros, self.gap_micros)
        incident_state.write(incident)
        forget.set(Timestamp(micros=incident[1] + self.keep_micros))
        self.stamped.inc()
        yield stamped(routed, signature, incident)

    @on_timer(FORGET)
    def on_forget(self, fired=beam.DoFn.TimestampParam, incident_state=beam.DoFn.StateParam(INCIDENT)):
        incident = incident_state.read()
        if incident is not None and incident[1] + self.keep_micros <= fired.micros + 1000:  # timers may keep ms only
            incident_state.clear()


SIGNATURE_BUCKETS = 1024
INCIDENT_RECORD = struct.Struct(">8sqq")  # signature's held digest, the incident's first and last event micros


@beam.typehints.with_output_types(beam.typehints.KV[int, beam.typehints.Any])
class _KeyBySignatureBucketFn(beam.DoFn):
    """(bucket of the signature's digest, (the digest's held half, event micros, routed record, signature))."""

    def __init__(self, buckets=SIGNATURE_BUCKETS):
        self.buckets = buckets

    def process(self, keyed):
        signature, (micros, routed) = keyed
        digest = digest_of(signature)
        yield bucket_of(digest, self.buckets), (held_half(digest), micros, routed, signature)


def incident_offset(packed, digest):
    """Where `digest`'s record starts in the packed incident records, or -1."""
    return record_offset(packed, digest, INCIDENT_RECORD.size)


def passed_by_the_watermark(fired):
    """The latest event micros a bucket's firing at `fired` may act on: its input watermark when that has gone
    further (a drain jumps it), plus a millisecond, since timers may keep milliseconds only."""
    return max(fired.micros, input_watermark() or fired.micros) + 1000


class _StampIncidentsInBucketFn(beam.DoFn):
    """Streaming on the DirectRunner: the decisions of `_StampIncidentsFn`, with signatures spread over
    `SIGNATURE_BUCKETS` keys, each holding its open incidents as packed (digest, first, last) records
    (24 bytes a signature) and one forget timer at the earliest of their ends (last + gap + lateness).

    Why: the DirectRunner keeps ~3 KB per key with a timer (measured in a streaming run), and most
    signatures are seen once, so one key per signature grew a local run by ~3 KB a report for two days.
    The forget timer may fire early (the incident it was set for went on): it then forgets what has ended
    and is set again.
    """
    reads_input_watermark = True  # READS_WATERMARK: forgets all that has ended at once
    INCIDENTS = ReadModifyWriteStateSpec("incidents", coders.BytesCoder())
    NEXT_FORGET = ReadModifyWriteStateSpec("next_forget", coders.VarIntCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, gap_seconds, allowed_lateness_seconds):
        self.gap_micros = int(gap_seconds * 1_000_000)
        self.keep_micros = self.gap_micros + int(allowed_lateness_seconds * 1_000_000)
        self.stamped = counter("bundle_stamped")

    def process(self, keyed, incidents=beam.DoFn.StateParam(INCIDENTS),
                next_forget=beam.DoFn.StateParam(NEXT_FORGET), forget=beam.DoFn.TimerParam(FORGET)):
        _, (digest, micros, routed, signature) = keyed
        packed = incidents.read() or b""
        offset = incident_offset(packed, digest)
        held = None if offset == -1 else INCIDENT_RECORD.unpack_from(packed, offset)[1:]
        incident = next_incident(held, micros, self.gap_micros)
        record = INCIDENT_RECORD.pack(digest, *incident)
        if offset == -1:
            packed += record
        else:
            packed = packed[:offset] + record + packed[offset + INCIDENT_RECORD.size:]
        incidents.write(packed)
        move_timer_earlier(next_forget, forget, incident[1] + self.keep_micros)
        self.stamped.inc()
        yield stamped(routed, signature, incident)

    @on_timer(FORGET)
    def forget_ended(self, fired=beam.DoFn.TimestampParam, incidents=beam.DoFn.StateParam(INCIDENTS),
                     next_forget=beam.DoFn.StateParam(NEXT_FORGET), forget=beam.DoFn.TimerParam(FORGET)):
        # all that the watermark has ended, not only what the timer was set for (else a drain fires once per
        # incident, each reading the bucket)
        now = passed_by_the_watermark(fired)
        open_incidents = [record for record in INCIDENT_RECORD.iter_unpack(incidents.read() or b"")
                          if record[2] + self.keep_micros > now]
        if open_incidents:
            incidents.write(b"".join(INCIDENT_RECORD.pack(*record) for record in open_incidents))
        else:
            incidents.clear()
        reset_timer(next_forget, forget, [last + self.keep_micros for _, _, last in open_incidents])


class StampBundleIds(beam.PTransform):
    """Sets `bundleId` (its incident's bundle id) on each routed record that has a signature (a copy; the
    record is otherwise as BuildRoutedRecords made it). Output in the global window, each record at its own
    event time.

    Why records, not enriched reports: in batch the signature grouping carries each report packed, and a
    routed record packs to ~2.3 KB where its enriched report takes ~3.4 KB (and unpacks in ~12 µs, not ~19);
    deflated against the example routed record (`pack_deflated`), ~480 bytes.

    A record whose signature fails goes on without a bundle id; its failure is a side-stage dead letter
    under `output_dir`, or, without one, stops the run."""

    def __init__(self, gap_seconds=DEFAULT_GAP_SECONDS, allowed_lateness_seconds=24 * 3600, output_dir=None):
        super().__init__()
        self.gap_seconds = gap_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.output_dir = output_dir

    def expand(self, records):
        records = in_global_window(records)
        if records.is_bounded:
            stamped_records, failures = self.stamped_in_batch(records)
        else:
            stamped_records, failures = self.stamped_in_streaming(records)
        if self.output_dir is None:
            _ = failures | "StopOnFailure" >> beam.Map(_stop_on_failure)
        else:
            _ = (failures,) | "WriteFailures" >> WriteSideStageFailures(self.output_dir, STAGE)
        return stamped_records

    def stamped_in_batch(self, records):
        keyed = records | "KeyPackedBySignature" >> beam.ParDo(_KeyPackedBySignatureFn()).with_outputs(
            FAILURES, main="keyed")
        stamped_records = (keyed.keyed | "SignatureTimelines" >> beam.GroupByKey()
                           | "StampTimelines" >> beam.ParDo(_StampSignatureTimelineFn(self.gap_seconds)))
        return stamped_records, keyed[FAILURES]

    def stamped_in_streaming(self, records):
        split = records | "SplitBySignature" >> beam.ParDo(_SplitBySignatureFn()).with_outputs(
            _SplitBySignatureFn.UNSIGNED, FAILURES, main="signed")
        if on_the_direct_runner(records.pipeline):
            expose_input_watermark()
            stamped_records = (split.signed | "KeyBySignatureBucket" >> beam.ParDo(_KeyBySignatureBucketFn())
                               | "StampIncidentsInBuckets" >> beam.ParDo(_StampIncidentsInBucketFn(
                                   self.gap_seconds, self.allowed_lateness_seconds)))
        else:
            stamped_records = split.signed | "StampIncidents" >> beam.ParDo(
                _StampIncidentsFn(self.gap_seconds, self.allowed_lateness_seconds))
        return (stamped_records, split[_SplitBySignatureFn.UNSIGNED]) | "Stamped" >> beam.Flatten(), split[FAILURES]


def _stop_on_failure(failure):
    _, (error_type, error, _) = failure
    raise RuntimeError(f"bundle signature failed: {error_type.__name__}: {error}")


def sighting(record, micros):
    """(event micros, user digest, esp, jurisdiction) of a routed record: the user only as the 64-bit
    digest of its (ESP, id) pair (transforms/plumbing/distinct.py), so no user id reaches the bundle state."""
    user = (record.get("reportedUser") or {}).get("espIdentifier")
    esp = record["espId"]
    return micros, pair_digest64(esp, user) if user else None, esp, record["jurisdiction"]


class _KeyByBundleFn(beam.DoFn):
    """((bundle id, signature), sighting) of each routed record that carries a bundle id."""

    def process(self, record, stamped=beam.DoFn.WindowedValueParam):
        try:
            bundle = record.get("bundleId")
            signature = record_signature(record)
            if bundle and signature is not None:
                keyed = (bundle, signature), sighting(record, stamped.timestamp_micros)
                hash(keyed)  # a value no key or set could hold fails here, with its record, not in the combine
                yield keyed
        except Exception as error:  # one record's failure: a dead letter, the others are bundled
            yield failed(record, error)


@dataclasses.dataclass
class BundleTally:
    """What a bundle accumulates: first/last seen (event micros), reports, distinct users (by digest), ESPs,
    jurisdictions."""

    first: float = float("inf")
    last: float = float("-inf")
    reports: int = 0
    users: DistinctDigests = dataclasses.field(default_factory=DistinctDigests)
    esps: set = dataclasses.field(default_factory=set)
    jurisdictions: set = dataclasses.field(default_factory=set)

    def add(self, sighting):
        seen, user, esp, jurisdiction = sighting
        self.first, self.last, self.reports = min(self.first, seen), max(self.last, seen), self.reports + 1
        if user is not None:
            self.users.add(user)
        self.esps.add(esp)
        self.jurisdictions.add(jurisdiction)

    def merge(self, other):
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        self.reports += other.reports
        self.users.update(other.users)
        self.esps |= other.esps
        self.jurisdictions |= other.jurisdictions


def bundle_record(bundle, signature, start_micros, end_micros, tally, pane):
    """The bundle row: the incident's span (first report to last report plus the gap), counts, pane columns."""
    return {
        "bundle_id": bundle,
        "signature": signature,
        "signature_kind": signature_kind(signature),
        "window_start": utc_of_micros(start_micros),
        "window_end": utc_of_micros(end_micros),
        "first_seen": utc_of_micros(tally.first),
        "last_seen": utc_of_micros(tally.last),
        "reports": tally.reports,
        "users": len(tally.users),
        "esps": len(tally.esps),
        "jurisdictions": sorted(tally.jurisdictions),
        **pane,
    }


class _BundleRecordFn(beam.DoFn):
    """Streaming: a session window's combined bundle -> its row."""

    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        try:
            (bundle, signature), tally = keyed
            row = bundle_record(bundle, signature, win.start.micros, win.end.micros, tally, pane_columns(pane))
        except Exception as error:  # one bundle's row: a dead letter, the others are written
            yield failed(keyed, error)
            return
        yield row


BUNDLE_BUCKETS = 1024


def key_by_bundle_bucket(buckets):
    """Streaming on the DirectRunner: (bucket of the bundle id, the keyed sighting packed)."""
    return PackedIntoBuckets(buckets, _bundle_of_sighting, packed_sighting)


def _bundle_of_sighting(keyed):
    (bundle, _), _ = keyed
    return bundle


# form 0, event micros, user digest, whether there is a user, the bundle id's 12 bytes, the signature's hash bytes
_SIGHTING_HEAD = struct.Struct("<BqqB12sB")
_PACKED = 0  # a pickled sighting starts with pickle's PROTO opcode, 0x80
_BUNDLE_ID = re.compile(r"bnd-[0-9a-f]{24}")
_HEX_SIGNATURE = re.compile(r"([^:]*:)((?:[0-9a-f]{2}){1,255})")


def packed_sighting(keyed):
    """A keyed sighting as the bytes the bundle sessions hold for gap + lateness (48 h by default): a fixed
    head (event micros, user digest, the bundle id and an exact hash's hex as bytes), then the signature's
    text before its hash, the ESP and the jurisdiction: ~70-90 bytes where its pickle takes ~160. A sighting
    this form cannot hold (a bundle id `bundle_id` did not make, a text with a NUL or no UTF-8 form, a value
    of another type) is pickled."""
    (bundle, signature), (micros, user, esp, jurisdiction) = keyed
    try:
        return _packed(bundle, signature, micros, user, esp, jurisdiction)
    except (TypeError, ValueError, struct.error):  # UnicodeEncodeError is a ValueError
        return pickled((bundle, signature, micros, user, esp, jurisdiction))


def _packed(bundle, signature, micros, user, esp, jurisdiction):
    if not _BUNDLE_ID.fullmatch(bundle) or "\x00" in signature + esp + jurisdiction:
        raise ValueError("not a packable sighting")
    exact_hash = _HEX_SIGNATURE.fullmatch(signature)
    prefix, hash_bytes = (exact_hash[1], bytes.fromhex(exact_hash[2])) if exact_hash else (signature, b"")
    head = _SIGHTING_HEAD.pack(_PACKED, micros, user or 0, user is not None, bytes.fromhex(bundle[4:]),
                               len(hash_bytes))
    return head + hash_bytes + "\x00".join((prefix, esp, jurisdiction)).encode("utf-8")


def unpacked_sighting(packed):
    """(bundle id, signature, event micros, user digest or None, ESP, jurisdiction) of `packed_sighting`."""
    if packed[0] != _PACKED:
        return pickle.loads(packed)
    _, micros, user, has_user, bundle, hash_length = _SIGHTING_HEAD.unpack_from(packed)
    texts_at = _SIGHTING_HEAD.size + hash_length
    prefix, esp, jurisdiction = packed[texts_at:].decode("utf-8").split("\x00")
    return (f"bnd-{bundle.hex()}", prefix + packed[_SIGHTING_HEAD.size:texts_at].hex(), micros,
            user if has_user else None, esp, jurisdiction)


def sessions_of(times, gap_micros):
    """Sorted event micros -> [(first, last)] of the sessions they form: a time less than the gap after the
    previous one continues its session (Beam's Sessions: windows [t, t + gap) that overlap merge)."""
    sessions = []
    for micros in times:
        if sessions and micros < sessions[-1][1] + gap_micros:
            sessions[-1][1] = micros
        else:
            sessions.append([micros, micros])
    return [tuple(session) for session in sessions]


class _BundleSessionsInBucketFn(beam.DoFn):
    """Streaming on the DirectRunner: the bundle rows of Beam's session windows (gap, allowed lateness,
    accumulating; on-time pane at last + gap, a late pane per late sighting), with bundles spread over
    `BUNDLE_BUCKETS` keys, each holding its sightings packed (`packed_sighting`) in one bytearray, appended in
    place (`append_record`), the spans of its fired panes, and one timer at the earliest end (or expiry: end +
    lateness) of its sessions.

    Why: the DirectRunner's session windows keep a key per bundle (several KB each with its window, trigger
    state and timer, copied per bundle), and most bundles are a single report held for the gap plus the
    lateness, so a local run grew by that per report; here a sighting costs its packed bytes (~70-90) and a
    two-byte length (as a bag of bytes values, ~40 more). A late sighting and a timer read the bucket's whole
    bytearray: cheap while sessions are few, linear in them.
    Beam's panes, as its trigger driver makes them: a late sighting inside a fired session's span fires the
    next pane; one that moves the span (a merged window) or opens a session already behind the watermark
    fires pane 0, late; a sighting whose own window has expired is dropped. Not covered (no bundle stamped in
    time order meets it): a late sighting extending a fired session past the watermark fires on time at
    the new end.
    """
    holds_watermark_at_timers = True  # HOLDS_WATERMARK: on-time panes emitted by the timer are on time downstream
    reads_input_watermark = True  # READS_WATERMARK: late sightings are told from on-time ones as Beam does
    SIGHTINGS = ReadModifyWriteStateSpec("sightings", HeldAsIs())  # a bytearray of `append_record`s
    PANES = ReadModifyWriteStateSpec("panes", coders.PickleCoder())  # {(bundle, signature): {(first, last): index}}
    NEXT_DUE = ReadModifyWriteStateSpec("next_due", coders.VarIntCoder())
    DUE = TimerSpec("due", TimeDomain.WATERMARK)

    def __init__(self, gap_seconds, allowed_lateness_seconds):
        self.gap_micros = int(gap_seconds * 1_000_000)
        self.lateness_micros = int(allowed_lateness_seconds * 1_000_000)

    def process(self, keyed, sightings=beam.DoFn.StateParam(SIGHTINGS), panes_state=beam.DoFn.StateParam(PANES),
                next_due=beam.DoFn.StateParam(NEXT_DUE), due=beam.DoFn.TimerParam(DUE)):
        _, packed = keyed
        bundle, signature, micros, *_ = unpacked_sighting(packed)
        watermark = input_watermark()
        last_instant = micros + self.gap_micros - 1  # of the sighting's own window
        if watermark is not None and micros + self.gap_micros + self.lateness_micros < watermark:
            return []  # its window expired: Beam drops it
        held = sightings.read() or bytearray()
        append_record(held, packed)
        sightings.write(held)
        if watermark is None or last_instant >= watermark:
            move_timer_earlier(next_due, due, last_instant)
            return []
        return self.late_pane((bundle, signature), micros, watermark, sightings, panes_state, next_due, due)

    def late_pane(self, key, micros, watermark, sightings, panes_state, next_due, due):
        """[the late pane of the session a late sighting at `micros` belongs to], or [] if it is still open."""
        own = [self.sighting(record) for record in map(unpacked_sighting, iter_records(sightings.read()))
               if tuple(record[:2]) == key]
        session = next(span for span in self.sessions(own) if span[0] <= micros <= span[1])
        end_instant = session[1] + self.gap_micros - 1
        if end_instant >= watermark:  # merged into a session still open
            move_timer_earlier(next_due, due, end_instant)
            return []
        panes = panes_state.read() or {}
        fired = panes.get(key, {})
        index = fired[session] + 1 if session in fired else 0
        panes[key] = {**{span: pane for span, pane in fired.items() if not self.overlap(span, session)},
                      session: index}
        panes_state.write(panes)
        move_timer_earlier(next_due, due, end_instant + 1 + self.lateness_micros)
        return [self.row(key, session, own, {"pane_index": index, "pane_timing": "LATE"})]

    def sessions(self, own):
        return sessions_of(sorted(seen for seen, *_ in own), self.gap_micros)

    @staticmethod
    def overlap(span, other):
        return span[0] <= other[1] and other[0] <= span[1]

    @staticmethod
    def sighting(record):
        return tuple(record[2:])

    def row(self, key, session, own, pane):
        """The session's bundle row at its window's last instant, or (one bundle's row) a failure."""
        try:
            tally = BundleTally()
            for sighting in own:
                if session[0] <= sighting[0] <= session[1]:
                    tally.add(sighting)
            end = session[1] + self.gap_micros
            return TimestampedValue(bundle_record(*key, session[0], end, tally, pane), Timestamp(micros=end - 1))
        except Exception as error:
            return failed((key, own), error)

    @on_timer(DUE)
    def on_due(self, fired=beam.DoFn.TimestampParam, sightings=beam.DoFn.StateParam(SIGHTINGS),
               panes_state=beam.DoFn.StateParam(PANES), next_due=beam.DoFn.StateParam(NEXT_DUE),
               due=beam.DoFn.TimerParam(DUE)):
        """Fires the on-time pane of each session that has ended, forgets each that has expired."""
        # every session the watermark has passed, not only the one the timer was set for (a timer a session
        # would make a drain fire once per session, each reading the whole bytearray)
        now = passed_by_the_watermark(fired)
        by_key = collections.defaultdict(list)
        for packed in iter_records(sightings.read() or b""):
            record = unpacked_sighting(packed)
            by_key[tuple(record[:2])].append((packed, self.sighting(record)))
        panes, kept, upcoming = panes_state.read() or {}, [], []
        for key, held in by_key.items():
            own, fired_panes, live_panes = [sighting for _, sighting in held], panes.get(key, {}), {}
            for session in self.sessions(own):
                end_instant = session[1] + self.gap_micros - 1
                expiry = end_instant + 1 + self.lateness_micros
                if session not in fired_panes and end_instant < now:
                    yield self.row(key, session, own, dict(ON_TIME_PANE))  # its window's end-of-window firing
                    fired_panes = {**fired_panes, session: 0}
                if expiry < now:
                    continue  # expired: forgotten, as Beam clears a window's state
                if session in fired_panes:
                    live_panes[session] = fired_panes[session]
                    upcoming.append(expiry)
                else:
                    upcoming.append(end_instant)
                kept.extend(packed for packed, sighting in held if session[0] <= sighting[0] <= session[1])
            if live_panes:
                panes[key] = live_panes
            else:
                panes.pop(key, None)
        self.rewrite(sightings, kept)
        if panes:
            panes_state.write(panes)
        else:
            panes_state.clear()
        reset_timer(next_due, due, upcoming)

    @staticmethod
    def rewrite(sightings, kept):
        if not kept:
            sightings.clear()
            return
        held = bytearray()
        for packed in kept:
            append_record(held, packed)
        sightings.write(held)


def batch_bundle_record(gap_seconds):
    """Batch: ((bundle id, signature), its sightings) -> the row, timestamped as its session window's end.

    Why the sightings are grouped rather than combined (CombinePerKey): nearly every bundle key is rare in a
    batch, so combining before the grouping merges nothing, and its BundleTally accumulators cross the
    grouping pickled, twice on the local runner; the sighting tuples cross through Beam's compiled coder."""
    gap_micros = int(gap_seconds * 1_000_000)

    def to_record(keyed):
        (bundle, signature), sightings = keyed
        tally = BundleTally()
        for seen in sightings:
            tally.add(seen)
        start, end = tally.first, tally.last + gap_micros
        return in_global_window_at(bundle_record(bundle, signature, start, end, tally, ON_TIME_PANE), end - 1)

    return to_record


def date_partition(row):
    """`dt=<date the incident began>`, UTC (`first_seen` is a UTC datetime; `isoformat` is ~9x strftime)."""
    return "dt=" + row["first_seen"].date().isoformat()


class BundleRepeats(beam.PTransform):
    """Groups routed records by bundle id, in session windows of the bundle gap; writes
    `bundles/dt=<first seen date>/*.parquet`.

    On-time pane when the watermark passes the incident's last report plus the gap, then one accumulating
    late pane per late report (within `allowed_lateness_seconds`); a query keeps the latest pane per
    bundle_id. Returns the bundle records.
    """

    def __init__(self, output_dir, gap_seconds=DEFAULT_GAP_SECONDS, allowed_lateness_seconds=24 * 3600):
        super().__init__()
        self.output_dir = output_dir
        self.gap_seconds = gap_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, routed_records):
        keyed = routed_records | "KeyByBundle" >> beam.ParDo(_KeyByBundleFn()).with_outputs(FAILURES, main="keyed")
        if routed_records.is_bounded:
            bundles, record_failures = (
                in_global_window(keyed.keyed)
                | "GroupBundle" >> beam.GroupByKey()
                | "ToBundleRecord" >> beam.Map(batch_bundle_record(self.gap_seconds)).with_exception_handling())
        elif on_the_direct_runner(routed_records.pipeline):
            bundles, record_failures = self.bundles_in_buckets(keyed.keyed)
        else:
            bundles, record_failures = self.bundles_in_sessions(keyed.keyed)
        _, refused = bundles | "WriteBundleFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/bundles",
            destination=date_partition,
            sink=functools.partial(ParquetSink, BUNDLE_SCHEMA),
            suffix=".parquet",
            window_seconds=24 * 3600,  # files per day the incidents end in
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            with_refusals=True,
            grouped_as=GROUPED_AS_LINES)  # parsed by Arrow against the table's schema (ParquetSink)
        _ = (keyed[FAILURES], record_failures, refused) | "WriteFailures" >> WriteSideStageFailures(
            self.output_dir, STAGE)
        return bundles

    def bundles_in_sessions(self, keyed):
        """Streaming: Beam's session windows, a key per bundle; (rows, failures)."""
        made = (keyed
                | "IncidentSessions" >> late_firing_windows(
                    window.Sessions(self.gap_seconds), self.allowed_lateness_seconds, accumulate=True)
                | "CombineBundle" >> beam.CombinePerKey(TallyCombineFn(BundleTally))
                | "ToBundleRecord" >> beam.ParDo(_BundleRecordFn()).with_outputs(FAILURES, main="bundles"))
        return made.bundles, made[FAILURES]

    def bundles_in_buckets(self, keyed, buckets=BUNDLE_BUCKETS):
        """Streaming on the DirectRunner: the same rows, bundles in `buckets` keys; (rows, failures)."""
        hold_watermark_at_user_timers()
        expose_input_watermark()
        made = (keyed
                | "KeyByBundleBucket" >> beam.ParDo(key_by_bundle_bucket(buckets))
                | "BundleSessionsInBuckets" >> beam.ParDo(_BundleSessionsInBucketFn(
                    self.gap_seconds, self.allowed_lateness_seconds)).with_outputs(FAILURES, main="bundles"))
        return made.bundles, made[FAILURES]
