"""The local runner's form of a windowed combine: one merged accumulator per key and window.

Beam's form (`WindowInto(<fixed or sliding windows>, AfterWatermark(late=AfterCount(1)))` then
`CombinePerKey`) is right on
a production runner. On the bundle-based DirectRunner its streaming GroupByKey keeps what reaches it until
the window fires: every element, or with the combine lifted one accumulator per bundle (an hourly count
held ~78,000 lists and 51,000 dicts after 10 minutes at 200 reports/s), and it never forgets a window.
`CombineInWindowsFn` keeps, in one state value, one accumulator per key and window (fixed or sliding) and
the panes each window has fired, and writes Beam's panes: on time when the watermark passes the window's end, then
one late pane per bundle that brings late elements to the window (a bundle's late elements of one window
make one pane, as the trigger driver fires once per work item), accumulating or discarding, each
timestamped at the window's last instant in that window with Beam's pane info; elements of a window whose
end plus the allowed lateness the watermark has passed are dropped, and so is the window's state.
"""
import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from transforms.plumbing.direct_runner import expose_input_watermark, hold_watermark_at_user_timers, input_watermark
from transforms.plumbing.packed_buckets import move_timer_earlier, reset_timer

ONE_KEY = 0  # every element under one state key: the step runs one bundle at a time anyway


class HeldAsIs(coders.Coder):
    """A state coder that keeps the value itself: the DirectRunner holds user state in memory and copies a
    key's state per bundle, so a pickling coder would encode and decode every window's accumulators once
    per bundle (an hour's distinct users, say), where this costs nothing. DirectRunner-only: the value is
    never bytes."""

    def encode(self, value):
        return value

    def decode(self, encoded):
        return encoded

    def is_deterministic(self):
        return False


class WindowInProgress:
    """One window's keys: what each has accumulated (when discarding, only keys with elements since their
    last pane) and the panes each has fired (only keys that fired one). Keys nest in their window, so a key
    costs a dict entry and its accumulator, not a (key, start, end) tuple and an object of its own: the
    spike counts hold a key per signature, nearly one per report, for the window and its lateness."""
    __slots__ = ("accumulators", "panes")

    def __init__(self):
        self.accumulators = {}
        self.panes = {}


def keyed_for_local_windows(keyed):
    """(key, value) -> (the one state key, (key, value))."""
    return ONE_KEY, keyed


class CombineInWindowsFn(beam.DoFn):
    """(ONE_KEY, (key, value)) timestamped elements -> (key, combined) per pane of each key's windows of
    `window_fn` (fixed or sliding: not merging), as Beam's windows with a watermark trigger firing once per
    late bundle make them (see the module).

    One case differs from Beam's Python trigger driver, which fires an element that arrives after the
    watermark passed its window's end but before that window's end-of-window timer did at once, as an EARLY
    pane holding the output watermark: here it joins the on-time pane (the Beam model's answer); a
    TestStream does not meet this race, which depends on when the runner delivers the timer.
    """
    holds_watermark_at_timers = True  # HOLDS_WATERMARK: on-time panes emitted by the timer are on time downstream
    reads_input_watermark = True  # READS_WATERMARK: late elements are told from on-time ones as Beam does
    WINDOWS = ReadModifyWriteStateSpec("windows", HeldAsIs())  # {(start, end): WindowInProgress}, in micros
    NEXT_DUE = ReadModifyWriteStateSpec("next_due", coders.VarIntCoder())
    DUE = TimerSpec("due", TimeDomain.WATERMARK)

    def __init__(self, combine_fn, window_fn, allowed_lateness_seconds, accumulate):
        self.combine_fn = combine_fn
        self.window_fn = window_fn
        self.fixed_micros = (window_fn.size.micros if isinstance(window_fn, window.FixedWindows)
                             and not window_fn.offset.micros else None)
        self.lateness_micros = int(allowed_lateness_seconds * 1_000_000)
        self.accumulate = accumulate

    def setup(self):
        self.combine_fn.setup()

    def start_bundle(self):
        # (key, (start, end)) -> (its window's WindowInProgress, pane index): fired when the bundle ends
        self.late_panes = {}

    def spans(self, timestamp, value):
        """(start, end) micros of each window `timestamp` falls in (fixed windows by arithmetic: per element)."""
        if self.fixed_micros is not None:
            start = timestamp.micros - timestamp.micros % self.fixed_micros
            return ((start, start + self.fixed_micros),)
        return tuple((win.start.micros, win.end.micros)
                     for win in self.window_fn.assign(window.WindowFn.AssignContext(timestamp, element=value)))

    def live_spans(self, timestamp, value, watermark):
        """The spans of the windows `timestamp` falls in that have not expired (Beam drops the element from
        an expired one)."""
        return [span for span in self.spans(timestamp, value)
                if watermark is None or watermark <= span[1] + self.lateness_micros]

    def process(self, element, timestamp=beam.DoFn.TimestampParam, windows_state=beam.DoFn.StateParam(WINDOWS),
                next_due=beam.DoFn.StateParam(NEXT_DUE), due=beam.DoFn.TimerParam(DUE)):
        _, (key, value) = element
        watermark = input_watermark()
        spans = self.live_spans(timestamp, value, watermark)
        if spans:
            windows = windows_state.read() or {}
            for span in spans:
                self.add(windows, key, span, value, watermark, next_due, due)
            windows_state.write(windows)

    def add(self, windows, key, span, value, watermark, next_due, due):
        """`value` into one key's window: on time, joining a pending on-time pane, or making a late pane."""
        held = windows.get(span)
        if held is None:
            held = windows[span] = WindowInProgress()
        opened = self.accumulate_in(held, key, value)
        pane_key = (key, span)
        if pane_key in self.late_panes:
            return  # in the late pane this bundle fires
        panes = held.panes.get(key, 0)
        end = span[1]
        if watermark is None or watermark < end or (panes == 0 and not opened):
            move_timer_earlier(next_due, due, end)  # on time, or joining the on-time pane its timer fires
        else:
            self.late_panes[pane_key] = held, panes
            held.panes[key] = panes + 1

    def accumulate_in(self, held, key, value):
        """Adds `value` to the key's accumulator in the window; True if the key is new to the window."""
        accumulators = held.accumulators
        opened = key not in accumulators
        accumulator = accumulators.get(key)
        if accumulator is None:  # a new key, or a key in no accumulator since its last pane, discarding
            accumulator = self.combine_fn.create_accumulator()
        accumulators[key] = self.combine_fn.add_input(accumulator, value)
        return opened

    def finish_bundle(self):
        for (key, span), (held, index) in self.late_panes.items():
            yield self.pane(key, span, held, index, PaneInfoTiming.LATE)

    def pane(self, key, span, held, index, timing):
        """The key's pane `index` of window `span`: its combined value at the window's last instant, in the
        window."""
        start, end = span
        accumulator = self.pane_accumulator(key, span, held)
        return WindowedValue((key, self.combine_fn.extract_output(accumulator)), Timestamp(micros=end - 1),
                             (window.IntervalWindow(Timestamp(micros=start), Timestamp(micros=end)),),
                             PaneInfo(index == 0, False, timing, index, index))

    def pane_accumulator(self, key, span, held):
        """What the key's pane of window `span` holds: a copy when accumulating, as the state goes on; when
        discarding, the accumulator itself, leaving the window (a fired key then costs its pane count only,
        for the window's lateness)."""
        if self.accumulate:
            return self.combine_fn.merge_accumulators([held.accumulators[key]])
        return held.accumulators.pop(key)

    @on_timer(DUE)
    def on_due(self, fired=beam.DoFn.TimestampParam, windows_state=beam.DoFn.StateParam(WINDOWS),
               next_due=beam.DoFn.StateParam(NEXT_DUE), due=beam.DoFn.TimerParam(DUE)):
        """Fires the on-time pane of every window the watermark has passed; forgets those that expired."""
        return self.fire_and_forget(self.now(fired), windows_state, next_due, due)

    @staticmethod
    def now(fired):
        return max(fired.micros, input_watermark() or fired.micros)

    def fire_and_forget(self, now, windows_state, next_due, due):
        windows = windows_state.read() or {}
        upcoming = []
        for span, held in list(windows.items()):
            end = span[1]
            if end <= now:
                for key in [key for key in held.accumulators if key not in held.panes]:
                    held.panes[key] = 1
                    yield self.pane(key, span, held, 0, PaneInfoTiming.ON_TIME)
            if now > end + self.lateness_micros:
                del windows[span]
            elif end > now:
                upcoming.append(end)
        if windows:
            windows_state.write(windows)
        else:
            windows_state.clear()
        reset_timer(next_due, due, upcoming)


class CombineInSlidingWindowsFn(CombineInWindowsFn):
    """`CombineInWindowsFn` for accumulating sliding windows, each a whole number of periods: a key's
    accumulator is held once per period (`{(start, end): {key: accumulator}}`) and a window's pane merges
    those of the periods it covers, where the plain form holds one accumulator per window, so size/period
    copies of each element's share (24 for a day sliding hourly: the trend tables' distinct users and
    bundles of each hour held in 24 windows). The windows keep only which keys they hold and their panes.
    A period is forgotten with the last window that covers it."""
    PERIODS = ReadModifyWriteStateSpec("periods", HeldAsIs())  # {(start, end): {key: accumulator}}, in micros
    DUE = TimerSpec("due", TimeDomain.WATERMARK)  # a spec takes one callback: this form's own

    def __init__(self, combine_fn, window_fn, allowed_lateness_seconds, accumulate):
        super().__init__(combine_fn, window_fn, allowed_lateness_seconds, accumulate)
        self.size_micros = window_fn.size.micros
        self.period_micros = window_fn.period.micros

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                windows_state=beam.DoFn.StateParam(CombineInWindowsFn.WINDOWS),
                periods_state=beam.DoFn.StateParam(PERIODS),
                next_due=beam.DoFn.StateParam(CombineInWindowsFn.NEXT_DUE),
                due=beam.DoFn.TimerParam(DUE)):
        _, (key, value) = element
        watermark = input_watermark()
        spans = self.live_spans(timestamp, value, watermark)
        if spans:
            self.periods = periods_state.read() or {}
            self.add_to_period(key, timestamp.micros, value)
            periods_state.write(self.periods)
            windows = windows_state.read() or {}
            for span in spans:
                self.add(windows, key, span, value, watermark, next_due, due)
            windows_state.write(windows)

    def add_to_period(self, key, micros, value):
        start = micros - micros % self.period_micros
        accumulators = self.periods.setdefault((start, start + self.period_micros), {})
        accumulator = accumulators.get(key)
        if accumulator is None:
            accumulator = self.combine_fn.create_accumulator()
        accumulators[key] = self.combine_fn.add_input(accumulator, value)

    def accumulate_in(self, held, key, value):
        """The window only notes the key (its accumulators live in the periods); True if new to it."""
        opened = key not in held.accumulators
        held.accumulators[key] = None
        return opened

    def pane_accumulator(self, key, span, held):
        """A new accumulator merging the key's in each period of the window. `self.periods` is the state's
        live value (held as is), read by the process call or timer whose panes these are."""
        start, end = span
        in_periods = (self.periods.get((period, period + self.period_micros), {}).get(key)
                      for period in range(start, end, self.period_micros))
        return self.combine_fn.merge_accumulators([held for held in in_periods if held is not None])

    @on_timer(DUE)
    def on_due(self, fired=beam.DoFn.TimestampParam,
               windows_state=beam.DoFn.StateParam(CombineInWindowsFn.WINDOWS),
               periods_state=beam.DoFn.StateParam(PERIODS),
               next_due=beam.DoFn.StateParam(CombineInWindowsFn.NEXT_DUE),
               due=beam.DoFn.TimerParam(DUE)):
        """Fires and forgets windows as the plain form does, then forgets the periods no window covers."""
        now = self.now(fired)
        self.periods = periods_state.read() or {}
        yield from self.fire_and_forget(now, windows_state, next_due, due)
        for span in [span for span in self.periods if now > span[0] + self.size_micros + self.lateness_micros]:
            del self.periods[span]
        if self.periods:
            periods_state.write(self.periods)
        else:
            periods_state.clear()


def combine_in_local_windows(combine_fn, window_fn, allowed_lateness_seconds, accumulate):
    """(key, value) timestamped elements -> (key, combined) per pane of `window_fn`'s windows, in the local
    form (see the module)."""
    hold_watermark_at_user_timers()
    expose_input_watermark()
    return _CombineInLocalWindows(combine_fn, window_fn, allowed_lateness_seconds, accumulate)


def sliding_by_periods(window_fn, accumulate):
    """Whether `CombineInSlidingWindowsFn` can hold `window_fn`'s windows: accumulating sliding windows,
    not offset, each a whole number of periods."""
    return (accumulate and isinstance(window_fn, window.SlidingWindows) and not window_fn.offset.micros
            and window_fn.size.micros % window_fn.period.micros == 0)


class _CombineInLocalWindows(beam.PTransform):
    def __init__(self, combine_fn, window_fn, allowed_lateness_seconds, accumulate):
        super().__init__()
        form = CombineInSlidingWindowsFn if sliding_by_periods(window_fn, accumulate) else CombineInWindowsFn
        self.dofn = form(combine_fn, window_fn, allowed_lateness_seconds, accumulate)

    def expand(self, keyed):
        return (keyed
                | "UnderOneKey" >> beam.Map(keyed_for_local_windows)
                | "CombineInWindows" >> beam.ParDo(self.dofn))
