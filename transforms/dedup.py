"""DedupRedeliveries: a redelivered report (same reportId) is dropped and counted.

The semantics of Beam's `DeduplicatePerKey(event_time_duration=...)`: a reportId is remembered until the
watermark passes its event time plus the horizon, so a redelivery arriving within that horizon — late or
out of order included — never reaches a sink twice. A report older than the horizon when it arrives (a
backlog, a redelivery after an outage) would be forgotten as soon as it is seen, since the watermark of a
live stream follows the clock: so the horizon starts at the later of its event time and its arrival.
Written out here because the stock DoFn also declares a processing-time timer, which makes the
DirectRunner fall back from the FnApiRunner to its much slower bundle-based runner even in batch, because it
drops duplicates silently where this one counts them, and because it keeps the first copy to arrive.

The copy kept does not depend on arrival order, in batch and streaming alike: the earliest event time, then
the smallest digest of the report's canonical JSON. Streaming holds each new reportId's best copy until the
watermark passes its event time (a better copy replaces it meanwhile), then releases it at its event time;
a copy arriving after that is a duplicate, whatever its event time. Runs in the global window, so a
redelivery is caught across windows. Streaming state comes in two forms (`state`): per-key, one key per
reportId (Dataflow), and bucketed, reportIds spread over a fixed number of keys (the local runner, whose
cost is per key); see `_FirstReportPerBucketFn`.

A bounded run (a batch replay) has no watermark until its end, so the horizon spans the whole input there:
it groups by reportId instead, which gives the same result without per-key state (the FnApiRunner's state
cache measures every state value's size, ~3 ms a report here); the reports cross that grouping packed as
bytes with their event micros (transforms/plumbing/packed_records.py).

Across runs: a reportId the output already holds (`already_routed()`, read from its routed files by each
worker as it starts, so that building the pipeline reads nothing) is dropped and counted as a duplicate too, so replays in any order, a producer's retry with a
new `submittedAt`, or a batch backfill over a streaming run's output never route a report twice.
"""
import bisect
import hashlib

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.plumbing.direct_runner import hold_watermark_at_user_timers, on_the_direct_runner
from transforms.plumbing.event_windows import in_global_window, in_global_window_at
from transforms.plumbing.metrics import counter
from transforms.plumbing.packed_buckets import DIGEST_BYTES, bucket_of, digest_of, record_offset, reset_timer
from transforms.plumbing.packed_records import pack, pack_deflated, unpack
from transforms.plumbing.windowed_files import record_line

DEFAULT_HORIZON_HOURS = 24
DEFAULT_BUCKETS = 1024
STATE_FORMS = ("auto", "bucketed", "per-key")
TIMER_SLACK_MICROS = 999  # a runner may keep timers to the millisecond only (the FnApiRunner does)
EXPIRY_BYTES = 8
RECORD_BYTES = EXPIRY_BYTES + DIGEST_BYTES
_REPORT_CODER = coders.FastPrimitivesCoder()


def content_digest(report):
    """The tie-break between copies of one reportId with the same event time (batch's too)."""
    return hashlib.sha256(record_line(report)).digest()


def best_copy(copies):
    """The copy kept among (report, event micros) copies of one reportId: the earliest event time, then the
    smallest content digest (only computed when event times tie)."""
    earliest = min(micros for _, micros in copies)
    tied = [copy for copy in copies if copy[1] == earliest]
    return tied[0] if len(tied) == 1 else min(tied, key=lambda copy: content_digest(copy[0]))


def best_packed_copy(copies):
    """`best_copy` over (event micros, packed report) copies; only the copies it must compare are unpacked."""
    earliest = min(micros for micros, _ in copies)
    tied = [packed for micros, packed in copies if micros == earliest]
    if len(tied) == 1:
        return unpack(tied[0]), earliest
    return best_copy([(unpack(packed), earliest) for packed in tied])


def forget_at_micros(event_micros, horizon_micros):
    """When a released reportId is forgotten: the horizon after the later of its event time and now, so a
    backlog report (event time behind a live watermark) is still remembered for the horizon."""
    return max(event_micros, Timestamp.now().micros) + horizon_micros


class _FirstReportPerIdFn(beam.DoFn):
    """Per-key form (Dataflow): per reportId, the best copy is held until the watermark passes its event time
    (a better one arriving meanwhile replaces it), then released; later copies are duplicates until the
    watermark passes the horizon."""
    holds_watermark_at_timers = True  # HOLDS_WATERMARK: the local runner holds the watermark at its timers
    BEST = userstate.ReadModifyWriteStateSpec("best", coders.TupleCoder([_REPORT_CODER, coders.VarIntCoder()]))
    SEEN = userstate.ReadModifyWriteStateSpec("seen", coders.BooleanCoder())
    RELEASE = userstate.TimerSpec("release", TimeDomain.WATERMARK)
    FORGET = userstate.TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, horizon):
        self.horizon_micros = horizon.micros
        self.duplicates = counter("duplicates")

    def process(self, keyed, ts=beam.DoFn.TimestampParam, best_state=beam.DoFn.StateParam(BEST),
                seen=beam.DoFn.StateParam(SEEN), release=beam.DoFn.TimerParam(RELEASE)):
        if seen.read():
            self.duplicates.inc()
            return
        copy, held = (keyed[1], ts.micros), best_state.read()
        if held is None:
            best_state.write(copy)
            release.set(Timestamp(micros=copy[1]))
            return
        self.duplicates.inc()
        best = best_copy([held, copy])
        if best is copy:
            best_state.write(copy)
            if copy[1] < held[1]:
                release.set(Timestamp(micros=copy[1]))

    @userstate.on_timer(RELEASE)
    def release_best_copy(self, best_state=beam.DoFn.StateParam(BEST), seen=beam.DoFn.StateParam(SEEN),
                          forget=beam.DoFn.TimerParam(FORGET)):
        held = best_state.read()
        if held is None:
            return
        report, micros = held
        best_state.clear()
        seen.write(True)
        forget.set(Timestamp(micros=forget_at_micros(micros, self.horizon_micros)))
        yield TimestampedValue(report, Timestamp(micros=micros))

    @userstate.on_timer(FORGET)
    def forget_report_id(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


def remembers(seen, digest):
    """Whether the packed `seen` records (expiry, digest; RECORD_BYTES each) hold `digest`."""
    return record_offset(seen, digest, RECORD_BYTES, digest_at=EXPIRY_BYTES) != -1


def expiry_at(seen, index):
    offset = index * RECORD_BYTES
    return int.from_bytes(seen[offset:offset + EXPIRY_BYTES], "big")


def remember(seen, digest, expiry_micros):
    """`seen` with (expiry, digest) inserted in expiry order, so what has expired is always a prefix."""
    count = len(seen) // RECORD_BYTES
    index = bisect.bisect_right(range(count), expiry_micros, key=lambda i: expiry_at(seen, i))
    offset = index * RECORD_BYTES
    return seen[:offset] + expiry_micros.to_bytes(EXPIRY_BYTES, "big") + digest + seen[offset:]


def forget_expired(seen, now_micros):
    """`seen` without the records expired at `now_micros` (a prefix, records being in expiry order)."""
    count = len(seen) // RECORD_BYTES
    index = bisect.bisect_right(range(count), now_micros, key=lambda i: expiry_at(seen, i))
    return seen[index * RECORD_BYTES:]


def due_and_waiting(pending, due_micros):
    """({reportId: [(micros, packed report)]} of the reportIds whose earliest copy is due by `due_micros`,
    with all their copies; [(reportId, micros, packed report)] of the others). Nothing is unpacked."""
    copies_by_id = {}
    for report_id, micros, packed in pending:
        copies_by_id.setdefault(report_id, []).append((micros, packed))
    due, waiting = {}, []
    for report_id, copies in copies_by_id.items():
        if min(micros for micros, _ in copies) <= due_micros:
            due[report_id] = copies  # the best is released, the others are duplicates
        else:
            waiting.extend((report_id, micros, packed) for micros, packed in copies)
    return due, waiting


class _FirstReportPerBucketFn(beam.DoFn):
    """Bucketed form (the local runner): the same decisions as `_FirstReportPerIdFn`, with reportIds
    spread over a fixed number of keys (buckets, by a digest of the reportId).

    Why: the DirectRunner keeps a state object of ~1-2 KB per key with a timer, and walks every key's
    timers each time it looks for due ones, so one key per remembered reportId made a long local stream's
    memory and time grow with the horizon. Here a bucket remembers its released reportIds as one bytes
    value of packed (expiry, 16-byte digest) records in expiry order (24 bytes an id), holds its pending
    copies in a bag, and has one forget timer for the earliest expiry.

    The pending copies are packed (packed_records.py) when they are keyed to their bucket: the DirectRunner
    decodes a whole bag at each read, and a bucket's bag is read at each of its release timers, so with
    the reports as dicts Beam's coder decoded every waiting report again at every firing (~8% of a
    streaming run's CPU). Packed, a read moves bytes and only the copies released are unpacked.

    Each pending copy sets a release timer at its own event time, tagged with that time (a dynamic timer:
    copies at one time share it), so a copy is released in the same firing round as the per-key form
    releases it, and the runner holds the watermark at the earliest pending copy as it does for any timer.
    A single timer per bucket can only fire at one time per round: the copies due after it waited for
    later rounds, which multiplied the bundles downstream (the form routed about a third as many reports
    a second as per-key) and held the watermark back.
    """
    holds_watermark_at_timers = True  # HOLDS_WATERMARK: the local runner holds the watermark at its timers
    SEEN = userstate.ReadModifyWriteStateSpec("seen", coders.BytesCoder())
    PENDING = userstate.BagStateSpec("pending", coders.TupleCoder(
        [coders.StrUtf8Coder(), coders.VarIntCoder(), coders.BytesCoder()]))
    NEXT_FORGET = userstate.ReadModifyWriteStateSpec("next_forget", coders.VarIntCoder())
    RELEASE = userstate.TimerSpec("release", TimeDomain.WATERMARK)
    FORGET = userstate.TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, horizon):
        self.horizon_micros = horizon.micros
        self.duplicates = counter("duplicates")

    def process(self, keyed, ts=beam.DoFn.TimestampParam, seen=beam.DoFn.StateParam(SEEN),
                pending=beam.DoFn.StateParam(PENDING), release=beam.DoFn.TimerParam(RELEASE)):
        _, (digest, report_id, packed) = keyed
        if remembers(seen.read() or b"", digest):
            self.duplicates.inc()
            return
        pending.add((report_id, ts.micros, packed))
        release.set(Timestamp(micros=ts.micros), dynamic_timer_tag=str(ts.micros))

    @userstate.on_timer(RELEASE)
    def release_due_copies(self, fired=beam.DoFn.TimestampParam, seen=beam.DoFn.StateParam(SEEN),
                           pending=beam.DoFn.StateParam(PENDING), next_forget=beam.DoFn.StateParam(NEXT_FORGET),
                           forget=beam.DoFn.TimerParam(FORGET)):
        due, waiting = due_and_waiting(pending.read(), fired.micros + TIMER_SLACK_MICROS)
        if not due:
            return  # its copies went out with an earlier copy of their reportId
        pending.clear()
        for item in waiting:
            pending.add(item)
        remembered, earliest_expiry = seen.read() or b"", next_forget.read()
        for report_id, copies in due.items():
            report, micros = best_packed_copy(copies)
            self.duplicates.inc(len(copies) - 1)
            expiry = forget_at_micros(micros, self.horizon_micros)
            remembered = remember(remembered, digest_of(report_id), expiry)
            if earliest_expiry is None or expiry < earliest_expiry:
                earliest_expiry = expiry
            yield TimestampedValue(report, Timestamp(micros=micros))
        seen.write(remembered)
        next_forget.write(earliest_expiry)
        forget.set(Timestamp(micros=earliest_expiry))

    @userstate.on_timer(FORGET)
    def forget_expired_ids(self, fired=beam.DoFn.TimestampParam, seen=beam.DoFn.StateParam(SEEN),
                           next_forget=beam.DoFn.StateParam(NEXT_FORGET), forget=beam.DoFn.TimerParam(FORGET)):
        remaining = forget_expired(seen.read() or b"", fired.micros + TIMER_SLACK_MICROS)
        if remaining:
            seen.write(remaining)
        else:
            seen.clear()
        reset_timer(next_forget, forget, [expiry_at(remaining, 0)] if remaining else [])


@beam.typehints.with_output_types(beam.typehints.KV[beam.typehints.Any, beam.typehints.Tuple[int, bytes]])
class _KeyPackedByReportIdFn(beam.DoFn):
    """The batch form's input: (reportId, (event micros, packed report deflated against the example report)),
    so the grouping moves few bytes and an int, not a report dict and a pickled Timestamp
    (transforms/plumbing/packed_records.py says why). A report is a decoded message (`decode_message`), so it
    packs `json_exact`. The key is hinted `Any` so its coder is Beam's compiled one: a `str` hint picks
    StrUtf8Coder, which runs in Python."""

    def process(self, report, stamped=beam.DoFn.WindowedValueParam):
        yield report["reportId"], (stamped.timestamp_micros, pack_deflated(report, "report", json_exact=True))


class _FirstOfGroupFn(beam.DoFn):
    """The batch form: one report per reportId group, back at its event time; the rest are counted."""

    def __init__(self):
        self.duplicates = counter("duplicates")

    def process(self, grouped):
        copies = list(grouped[1])
        report, micros = best_packed_copy(copies)
        self.duplicates.inc(len(copies) - 1)
        yield in_global_window_at(report, micros)


class _DropAlreadyRoutedFn(beam.DoFn):
    """Drops (and counts as duplicates) the reports whose reportId the output holds already."""

    def __init__(self, read_already_routed):
        self.read_already_routed = read_already_routed
        self.duplicates = counter("duplicates")
        self.already_in_output = counter("already_in_output")

    def setup(self):
        self.already_routed = frozenset(self.read_already_routed())

    def process(self, report):
        if report["reportId"] in self.already_routed:
            self.duplicates.inc()
            self.already_in_output.inc()
            return
        yield report


def bucketed_state(state, on_direct_runner):
    """Whether the streaming form keeps its state in buckets. `auto` does on the DirectRunner, where a key
    costs ~2 KB and the bucketed form routes as fast as per-key; elsewhere (Dataflow, whose state backend
    is built for many keys) it keeps one key per reportId."""
    if state not in STATE_FORMS:
        raise ValueError(f"--dedup-state must be one of {', '.join(STATE_FORMS)}, not {state!r}")
    return state == "bucketed" or (state == "auto" and on_direct_runner)


@beam.typehints.with_output_types(beam.typehints.KV[int, beam.typehints.Any])
class _KeyByBucketFn(beam.DoFn):
    """(bucket, (reportId digest, reportId, packed report)): the bucketed form's input."""

    def __init__(self, buckets):
        self.buckets = buckets

    def process(self, report):
        report_id = report["reportId"]
        digest = digest_of(report_id)
        yield bucket_of(digest, self.buckets), (digest, report_id, pack(report))


class DedupRedeliveries(beam.PTransform):
    """Keeps one copy per reportId within `horizon_hours` of event time (the earliest event time, then the
    smallest digest); counts the rest.

    `state` (streaming only): `per-key` (one key per reportId, right for Dataflow), `bucketed` (reportIds
    spread over `buckets` keys, for the local runner), or `auto` (bucketed on the DirectRunner, else
    per-key; see `bucketed_state`)."""

    def __init__(self, horizon_hours=DEFAULT_HORIZON_HOURS, already_routed=None, state="auto",
                 buckets=DEFAULT_BUCKETS):
        """`already_routed`: a function giving the reportIds the output holds (None: no output to consult)."""
        super().__init__()
        self.horizon = Duration(seconds=int(horizon_hours * 3600))
        self.already_routed = already_routed
        self.state = state
        self.buckets = buckets

    def expand(self, reports):
        if self.already_routed is not None:
            reports = reports | "DropAlreadyRouted" >> beam.ParDo(_DropAlreadyRoutedFn(self.already_routed))
        reports = in_global_window(reports)
        if reports.is_bounded:
            return (reports
                    | "KeyByReportIdWithEventTime" >> beam.ParDo(_KeyPackedByReportIdFn())
                    | "GroupByReportId" >> beam.GroupByKey()
                    | "FirstOfGroup" >> beam.ParDo(_FirstOfGroupFn()))
        hold_watermark_at_user_timers()  # copies released by a timer are on time downstream (local runner)
        if bucketed_state(self.state, on_the_direct_runner(reports.pipeline)):
            return (reports
                    | "KeyByBucket" >> beam.ParDo(_KeyByBucketFn(self.buckets))
                    | "FirstPerReportIdInBucket" >> beam.ParDo(_FirstReportPerBucketFn(self.horizon)))
        return (reports
                | "KeyByReportId" >> beam.Map(lambda report: (report["reportId"], report))
                | "FirstPerReportId" >> beam.ParDo(_FirstReportPerIdFn(self.horizon)))
