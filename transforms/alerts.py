"""SpikeAlerts: the flood warning: a count that jumps far above its recent baseline emits an alert.

Watched keys, each counted per fixed event-time window (hourly by default) of routed records:
  - `signature`: the content signature a report is bundled under (a bank entry or an exact hash; see
    transforms/reports/signatures.py), i.e. a hash or bundle going viral;
  - `esp`: one provider's report volume;
  - `jurisdiction`: the volume routed to one jurisdiction.
Rule, per key, evaluated once per window when the watermark passes its end (the on-time pane):
    alert  if  history >= warmup_windows  and  count >= min_count  and  count >= ratio * max(baseline, floor)
where `baseline` is an exponentially weighted mean of the key's past window counts (weight `alpha` on the
newest; windows without reports count as zero) and `history` the number of windows since the key was first
seen. Signatures have no warm-up (a new hash flooding in is the case to catch); volume keys need six hours
of history first, so a fresh run does not alert on every provider's first hour. A key silent for
`forget_after_windows` is forgotten. Late panes do not re-evaluate a past window (an alert is a warning,
not a tally); their reports are counted in `spike_late_reports_ignored`.
Alerts carry the key, counts and the rule: no user ids, IP addresses or media.
A record whose watched keys cannot be made, a timeline that cannot be judged (batch) or an alert the sink
refuses fails alone, as a side-stage dead letter `stage=alerts` (transforms/dead_letters.py).
"""
import collections
import dataclasses
import hashlib
import pickle
import struct

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.dead_letters import WriteSideStageFailures
from transforms.plumbing.direct_runner import on_the_direct_runner
from transforms.plumbing.event_windows import CombinePerKeyAndWindow, KeyedTableCombineFn, TablePaneCombineFn, utc
from transforms.plumbing.metrics import counter
from transforms.plumbing.packed_buckets import (PackedIntoBuckets, append_record, bucket_of, digest_of, held_half,
                                               iter_records, move_timer_earlier, pickled, reset_timer)
from transforms.plumbing.windowed_files import JsonLinesSink, WriteWindowedFiles
from transforms.reports.signatures import compact_signature, expanded_signature, record_signature

STAGE = "alerts"
DEFAULT_WINDOW_SECONDS = 3600
DEFAULT_FORGET_AFTER_WINDOWS = 48


@dataclasses.dataclass(frozen=True)
class SpikeRule:
    min_count: int
    ratio: float
    warmup_windows: int = 0
    alpha: float = 0.3
    baseline_floor: float = 1.0


DEFAULT_RULES = {
    "signature": SpikeRule(min_count=10, ratio=5.0),
    "esp": SpikeRule(min_count=50, ratio=3.0, warmup_windows=6, baseline_floor=5.0),
    "jurisdiction": SpikeRule(min_count=50, ratio=3.0, warmup_windows=6, baseline_floor=5.0),
}


@dataclasses.dataclass(frozen=True)
class Baseline:
    """What is remembered per key between windows."""
    first_start: int
    last_start: int
    mean: float


def spike_step(baseline, window_start, count, rule, window_seconds):
    """(new baseline, alert fields or None) after a key's count in the window starting at `window_start`."""
    if baseline is None:
        first_start, mean = window_start, 0.0
    else:
        first_start = baseline.first_start
        empty_windows = (window_start - baseline.last_start) // window_seconds - 1
        mean = baseline.mean * (1 - rule.alpha) ** empty_windows
    history = (window_start - first_start) // window_seconds
    reference = max(mean, rule.baseline_floor)
    alert = None
    if history >= rule.warmup_windows and count >= rule.min_count and count >= rule.ratio * reference:
        alert = {"count": count, "baseline": round(mean, 3), "ratio": round(count / reference, 2),
                 "history_windows": history}
    return Baseline(first_start, window_start, rule.alpha * count + (1 - rule.alpha) * mean), alert


def watched_keys(record):
    """The (kind, key) pairs a routed record counts toward."""
    keys = [("esp", record["espId"]), ("jurisdiction", record["jurisdiction"])]
    signature = record_signature(record)
    if signature is not None:
        keys.append(("signature", signature))
    return keys


def watched_keys_counted_once(record):
    """(the record's watched keys, 1): what CombinePerKeyAndWindow counts per key and window, a signature key
    alone, compacted (`counted_key`). The keys are hashed here, so a value no grouping could hold fails with
    its record, not inside the combine."""
    keys = tuple(counted_key(kind, key) for kind, key in watched_keys(record))
    hash(keys)
    return keys, 1


def counted_key(kind, key):
    """A signature's window count is held under the signature alone, an exact hash's as bytes
    (`compact_signature`); other keys as (kind, key). Nearly every report brings a signature of its own, held
    until its window fires: the tuple around it took ~70 of the ~190 bytes a distinct signature's count held
    (tracemalloc, 100,000 keys), and an MD5's text 96 where its compact form takes 64."""
    return compact_signature(key) if kind == "signature" else (kind, key)


def watched_key(counted):
    """The (kind, key) of a `counted_key`."""
    return counted if isinstance(counted, tuple) else ("signature", expanded_signature(counted))


def already_keyed(keys_and_count):
    return keys_and_count


_BYTES_KEY, _TEXT_KEY = b"b", b"t"  # how a signature key is logged: its compact bytes, or its text as UTF-8


class WatchedCounts:
    """One window's counts: volume keys ((kind, key), a few per window) in a dict, and each record's
    signature key appended to a log (`append_record`), counted when the window fires.

    Why: nearly every report brings a signature of its own, and a dict entry holding it took ~100 bytes
    (the key object and its slot) until the hour fired; logged, an MD5 signature takes 23."""
    __slots__ = ("volumes", "signatures")

    def __init__(self):
        self.volumes = {}
        self.signatures = bytearray()

    def add(self, keys, _count):
        for key in keys:
            if isinstance(key, tuple):
                self.volumes[key] = self.volumes.get(key, 0) + 1
            elif isinstance(key, bytes):
                append_record(self.signatures, _BYTES_KEY + key)
            else:
                append_record(self.signatures, _TEXT_KEY + key.encode("utf-8"))

    def merge(self, other):
        for key, count in other.volumes.items():
            self.volumes[key] = self.volumes.get(key, 0) + count
        self.signatures += other.signatures

    def by_key(self):
        """{counted key: count}, as KeyedCombineFn(CountCombineFn()) gives them (tests/test_spike_alerts.py
        compares them)."""
        return {**self.volumes, **dict(counted_signatures(self.signatures))}

    def counts_in_buckets(self, bucket_of_key):
        """(bucket, [(counted key, count)]) pairs of `by_key()`, each key in `bucket_of_key(counted key)`. Why not
        `by_key()` then spread: an hour's pane holds about a signature a report, and a dict of them all took
        ~100 bytes a key at the firing; here the log is split into a log a bucket first (~20 bytes a key),
        and each bucket's keys are counted alone."""
        logs = collections.defaultdict(bytearray)
        for logged in iter_records(self.signatures):
            append_record(logs[bucket_of_key(logged_signature(logged))], logged)
        counts = collections.defaultdict(list)
        for key, count in self.volumes.items():
            counts[bucket_of_key(key)].append((key, count))
        for bucket in logs.keys() | counts.keys():
            yield bucket, counts.pop(bucket, []) + counted_signatures(logs.pop(bucket, b""))

    def total(self):
        """The sum of `by_key()`'s counts."""
        return sum(self.volumes.values()) + sum(1 for _ in iter_records(self.signatures))


def counted_signatures(log):
    """[(counted key, count)] of the signatures in a log of them, each distinct one decoded once."""
    return [(logged_signature(logged), count) for logged, count in collections.Counter(iter_records(log)).items()]


def logged_signature(logged):
    """The counted key of a signature `WatchedCounts` logged."""
    return logged[1:] if logged[:1] == _BYTES_KEY else logged[1:].decode("utf-8")


class _OnTimeCountFn(beam.DoFn):
    """A key's window count -> (key, (window start, count)); what late panes add is counted and left out
    (a window is judged once; a bounded run has on-time panes only)."""

    def __init__(self):
        self.late_ignored = counter("spike_late_reports_ignored")

    def process(self, result):
        if result.pane["pane_timing"] == "LATE":
            self.late_ignored.inc(result.value)
            return
        yield watched_key(result.key), (result.start, result.value)


def window_end_micros(start, window_seconds):
    return (start + window_seconds) * 1_000_000


class _SpikeJudgeFn(beam.DoFn):
    """What every form of the detector takes (the rules, the window, how many silent windows a key is
    remembered) and the judging of one key's due windows, shared by the streaming forms."""

    def __init__(self, rules, window_seconds, forget_after_windows):
        self.rules = rules
        self.window_seconds = window_seconds
        self.forget_after_windows = forget_after_windows
        self.alerts = counter("spike_alerts")

    def judge(self, key, baseline, windows):
        """(the key's baseline after `windows`, their alerts): windows in start order, those already judged
        skipped."""
        (kind, value), alerts = key, []
        for start, count in windows:
            if baseline is not None and start <= baseline.last_start:
                continue  # a window already judged
            baseline, alert = spike_step(baseline, start, count, self.rules[kind], self.window_seconds)
            if alert:
                self.alerts.inc()
                alerts.append(alert_record(kind, value, start, self.window_seconds, self.rules[kind], alert))
        return baseline, alerts


class _SpikeDetectorFn(_SpikeJudgeFn):
    """Per key: buffers window counts until the watermark passes them, then applies the rule in order."""
    PENDING = BagStateSpec("pending", coders.TupleCoder([coders.VarIntCoder(), coders.VarIntCoder()]))
    BASELINE = ReadModifyWriteStateSpec("baseline", coders.PickleCoder())
    DUE = TimerSpec("due", TimeDomain.WATERMARK)
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def process(self, keyed, pending=beam.DoFn.StateParam(PENDING), due=beam.DoFn.TimerParam(DUE)):
        _, (start, count) = keyed
        pending.add((start, count))
        earliest = min(buffered_start for buffered_start, _ in pending.read())
        due.set(Timestamp(micros=window_end_micros(earliest, self.window_seconds) - 1))

    @on_timer(DUE)
    def on_due(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
               pending=beam.DoFn.StateParam(PENDING), baseline_state=beam.DoFn.StateParam(BASELINE),
               due=beam.DoFn.TimerParam(DUE), forget=beam.DoFn.TimerParam(FORGET)):
        buffered = sorted(pending.read())
        ready = [item for item in buffered  # timers may keep only milliseconds (the FnApiRunner does)
                 if window_end_micros(item[0], self.window_seconds) - 1000 <= fired.micros]
        waiting = buffered[len(ready):]
        pending.clear()
        for item in waiting:
            pending.add(item)
        if waiting:
            due.set(Timestamp(micros=window_end_micros(waiting[0][0], self.window_seconds) - 1))
        baseline, alerts = self.judge(key, baseline_state.read(), ready)
        yield from alerts
        if baseline is None:
            return
        baseline_state.write(baseline)
        forget.set(Timestamp(micros=window_end_micros(
            baseline.last_start, self.window_seconds * (1 + self.forget_after_windows))))

    @on_timer(FORGET)
    def on_forget(self, pending=beam.DoFn.StateParam(PENDING), baseline_state=beam.DoFn.StateParam(BASELINE)):
        if not list(pending.read()):  # a batch runner may fire this before counts already buffered are due
            baseline_state.clear()


# fewer buckets than the per-report stages' 1,024: a bucket is touched only when a window fires (no per-report
# rewrite grows with its size), and the DirectRunner holds ~6 KB for each key with a timer
DETECTOR_BUCKETS = 256
# the watched key's 8-byte digest and its baseline: first and last window start (epoch seconds: event times
# are from 1970 on, so these fit until 2106) and mean; when it is forgotten follows from its last window
BASELINE_RECORD = struct.Struct(">8sIId")
_BASELINE_DIGEST = struct.Struct(">8s16x")


def baseline_offsets(baselines):
    """{digest: where its record starts} of packed `BASELINE_RECORD`s, made in one pass: a firing looks up
    each of its keys here, where a search of the bytes per key grew with keys times baselines."""
    size = BASELINE_RECORD.size
    return {digest: index * size for index, (digest,) in enumerate(_BASELINE_DIGEST.iter_unpack(baselines))}


def key_by_detector_bucket(buckets):
    """Streaming on the DirectRunner: (bucket of the watched key, (key, window start, count) pickled)."""
    return PackedIntoBuckets(buckets, _watched_key_text, _pickled_watched_count)


def watched_key_text(key):
    """The text a watched key's digest is made of: its detector bucket is chosen by that digest and its
    baseline held under the digest's held half."""
    return repr(key)


def _watched_key_text(keyed):
    return watched_key_text(keyed[0])


def _pickled_watched_count(keyed):
    key, (start, count) = keyed
    return pickled((start, [(key, count)]))


def detector_bucket(key, buckets):
    """The bucket a watched key is judged in: by the digest of its text, as `key_by_detector_bucket` picks."""
    return bucket_of(digest_of(watched_key_text(key)), buckets)


@beam.typehints.with_output_types(beam.typehints.KV[int, bytes])
class _OnTimeCountsInBucketsFn(beam.DoFn):
    """A window's pane of counts (its `WatchedCounts`) -> (bucket, (window start, [(counted key, count)])
    pickled) per detector bucket, the keys as `counted_key` made them (a signature's bytes, not its text);
    a late pane's reports are counted and left out, as `_OnTimeCountFn` does."""

    def __init__(self, buckets):
        self.buckets = buckets
        self.late_ignored = counter("spike_late_reports_ignored")

    def process(self, result):
        if result.pane["pane_timing"] == "LATE":
            self.late_ignored.inc(result.value.total())
            return
        for bucket, counts in result.value.counts_in_buckets(self.counted_key_bucket):
            yield bucket, pickled((result.start, counts))

    def counted_key_bucket(self, counted):
        return detector_bucket(watched_key(counted), self.buckets)


def watched_key_digest(key):
    """The 8-byte digest a bucket's baselines are held under (`held_half` of the text's digest)."""
    return held_half(digest_of(watched_key_text(key)))


class _SpikeDetectorInBucketFn(_SpikeJudgeFn):
    """Streaming on the DirectRunner: the decisions of `_SpikeDetectorFn`, with watched keys spread over
    `DETECTOR_BUCKETS` keys, each holding its keys' pending window counts (pickled lists, in a bag), their
    baselines (packed records of `BASELINE_RECORD` under the key's digest, 24 bytes each) and one timer at
    the earliest of their due times and forget times.

    Why: the DirectRunner keeps several KB per key with a timer, and most signatures are counted in one
    window and then remembered for `forget_after_windows` (48 h by default): a local run grew by that for
    every report's signature. A baseline needs no key text (an alert takes it from the count being judged):
    a remembered key costs 24 bytes, where a pickled {key: (Baseline, forget at)} entry took ~90.
    """
    PENDING = BagStateSpec("pending", coders.BytesCoder())
    BASELINES = ReadModifyWriteStateSpec("baselines", coders.BytesCoder())  # BASELINE_RECORDs
    NEXT_DUE = ReadModifyWriteStateSpec("next_due", coders.VarIntCoder())
    DUE = TimerSpec("due", TimeDomain.WATERMARK)

    def due_micros(self, start):
        return window_end_micros(start, self.window_seconds) - 1

    def forget_micros(self, last_start):
        return window_end_micros(last_start, self.window_seconds * (1 + self.forget_after_windows))

    def process(self, keyed, pending=beam.DoFn.StateParam(PENDING), next_due=beam.DoFn.StateParam(NEXT_DUE),
                due=beam.DoFn.TimerParam(DUE)):
        _, packed = keyed
        pending.add(packed)
        start, _ = pickle.loads(packed)
        move_timer_earlier(next_due, due, self.due_micros(start))

    @on_timer(DUE)
    def on_due(self, fired=beam.DoFn.TimestampParam, pending=beam.DoFn.StateParam(PENDING),
               baselines_state=beam.DoFn.StateParam(BASELINES), next_due=beam.DoFn.StateParam(NEXT_DUE),
               due=beam.DoFn.TimerParam(DUE)):
        """Judges each key's windows that are due, in order; forgets the keys silent for long enough."""
        by_key, waiting = collections.defaultdict(list), []
        for packed in pending.read():
            start, counts = pickle.loads(packed)
            if self.due_micros(start) + 1 - 1000 <= fired.micros:  # timers may keep only milliseconds
                for counted, count in counts:
                    by_key[watched_key(counted)].append((start, count))
            else:
                waiting.append((packed, start, counts))
        baselines = bytearray(baselines_state.read() or b"")
        offsets = baseline_offsets(baselines)
        for key, ready in by_key.items():
            yield from self.judged(key, sorted(ready), baselines, offsets)
        still_pending = {watched_key_digest(watched_key(counted)) for _, _, counts in waiting for counted, _ in counts}
        kept = [record for record in BASELINE_RECORD.iter_unpack(baselines)  # a key kept past its forget time
                if self.forget_micros(record[2]) > fired.micros or record[0] in still_pending]  # waits for its count
        pending.clear()
        for packed, _, _ in waiting:
            pending.add(packed)
        if kept:
            baselines_state.write(b"".join(BASELINE_RECORD.pack(*record) for record in kept))
        else:
            baselines_state.clear()
        forget_times = (self.forget_micros(last_start) for _, _, last_start, _ in kept)
        upcoming = [self.due_micros(start) for _, start, _ in waiting] + [
            forget_at for forget_at in forget_times if forget_at > fired.micros]
        reset_timer(next_due, due, upcoming)

    def judged(self, key, ready, baselines, offsets):
        """The alerts of one key's due windows (start order); its record in `baselines` (a bytearray) updated
        or added, and `offsets` (`baseline_offsets`) with it."""
        digest = watched_key_digest(key)
        offset = offsets.get(digest, -1)
        held = None if offset == -1 else Baseline(*BASELINE_RECORD.unpack_from(baselines, offset)[1:])
        baseline, alerts = self.judge(key, held, ready)
        if baseline is not None:
            record = BASELINE_RECORD.pack(digest, baseline.first_start, baseline.last_start, baseline.mean)
            if offset == -1:
                offsets[digest] = len(baselines)
                baselines += record
            else:
                baselines[offset:offset + BASELINE_RECORD.size] = record
        return alerts


class _SpikeTimelineFn(_SpikeJudgeFn):
    """The batch form: a key's whole timeline at once, judged in event-time order.

    Same rule and forgetting as `_SpikeDetectorFn`, without per-key state: the FnApiRunner's state cache
    weighs every state write (objsize), which made this step most of a batch run's time.
    """

    def process(self, timeline):
        (kind, value), windows = timeline
        rule, baseline = self.rules[kind], None
        for start, count in sorted(windows):
            if baseline is not None and start >= baseline.last_start + self.window_seconds * (
                    1 + self.forget_after_windows):
                baseline = None  # silent long enough to be forgotten, as the streaming timer does
            baseline, alert = spike_step(baseline, start, count, rule, self.window_seconds)
            if alert:
                self.alerts.inc()
                yield TimestampedValue(alert_record(kind, value, start, self.window_seconds, rule, alert),
                                       Timestamp(micros=window_end_micros(start, self.window_seconds) - 1))


def alert_record(kind, key, window_start, window_seconds, rule, alert):
    start, end = utc(window_start), utc(window_start + window_seconds)
    alert_id = hashlib.sha256(f"{kind}|{key}|{window_start}".encode("utf-8")).hexdigest()[:24]
    return {"alert_id": f"alr-{alert_id}", "kind": kind, "key": key,
            "window_start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "window_end": f"{end:%Y-%m-%dT%H:%M:%SZ}", **alert,
            "rule": dataclasses.asdict(rule)}


def alert_partition(alert):
    return f"dt={alert['window_start'][:10]}"


class SpikeAlerts(beam.PTransform):
    """Watches routed records for spikes; writes `alerts/dt=.../*.jsonl`; returns the alert records."""

    def __init__(self, output_dir, window_seconds=DEFAULT_WINDOW_SECONDS, allowed_lateness_seconds=24 * 3600,
                 rules=None, forget_after_windows=DEFAULT_FORGET_AFTER_WINDOWS):
        super().__init__()
        self.output_dir = output_dir
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.rules = {**DEFAULT_RULES, **(rules or {})}
        self.forget_after_windows = forget_after_windows

    def expand(self, routed_records):
        keyed, key_failures = routed_records | "WatchedKeys" >> beam.Map(
            watched_keys_counted_once).with_exception_handling()
        if routed_records.is_bounded:
            alerts, judge_failures = self.batch_alerts(self.window_counts(keyed))
        elif on_the_direct_runner(routed_records.pipeline):
            alerts, judge_failures = self.streaming_alerts_in_buckets(keyed)
        else:
            alerts, judge_failures = self.streaming_alerts(self.window_counts(keyed))
        _, refused = alerts | "WriteAlertFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/alerts",
            destination=alert_partition,
            sink=JsonLinesSink,
            suffix=".jsonl",
            window_seconds=None,  # a warning is written as soon as it is judged, not when its hour closes
            with_refusals=True)
        _ = (key_failures, refused, *judge_failures) | "WriteFailures" >> WriteSideStageFailures(
            self.output_dir, STAGE)
        return alerts

    def window_counts(self, keyed_records):
        """(key, (window start, count)) of each watched key's on-time windows."""
        return self.count_windows(keyed_records) | "OnTimeCounts" >> beam.ParDo(_OnTimeCountFn())

    def count_windows(self, keyed_records, pane_as_one=False):
        """Each watched key's count per window; with `pane_as_one`, a pane as its `WatchedCounts`."""
        table_fn = TablePaneCombineFn(WatchedCounts) if pane_as_one else KeyedTableCombineFn(WatchedCounts)
        return keyed_records | "CountWindows" >> CombinePerKeyAndWindow(
            already_keyed, beam.combiners.CountCombineFn(), self.window_seconds, self.allowed_lateness_seconds,
            accumulate=False, keyed_combine_fn=table_fn, pane_as_one=pane_as_one)

    def batch_alerts(self, counts):
        """Each key's whole timeline judged at once; (alerts, [failures])."""
        alerts, failures = (counts
                            | "Timelines" >> beam.GroupByKey()
                            | "JudgeTimelines" >> beam.ParDo(
                                _SpikeTimelineFn(self.rules, self.window_seconds, self.forget_after_windows)
                            ).with_exception_handling())
        return alerts, [failures]

    def streaming_alerts(self, counts):
        """A stateful detector per watched key judges each of its windows once the watermark has passed it;
        (alerts, [])."""
        return (counts
                | "KeyTimeline" >> beam.WindowInto(window.GlobalWindows())
                | "DetectSpikes" >> beam.ParDo(
                    _SpikeDetectorFn(self.rules, self.window_seconds, self.forget_after_windows))), []

    def streaming_alerts_in_buckets(self, keyed_records, buckets=DETECTOR_BUCKETS):
        """On the DirectRunner: the same decisions, the watched keys in `buckets`, and a window's on-time
        counts going to them as one packed list per bucket, not an element per key (a window fires about
        one signature a report at once; ~400 bytes each as elements while their bundles last); (alerts, [])."""
        return (self.count_windows(keyed_records, pane_as_one=True)
                | "OnTimeCountsInBuckets" >> beam.ParDo(_OnTimeCountsInBucketsFn(buckets))
                | "KeyTimeline" >> beam.WindowInto(window.GlobalWindows())
                | "DetectSpikesInBuckets" >> beam.ParDo(
                    _SpikeDetectorInBucketFn(self.rules, self.window_seconds, self.forget_after_windows))), []
