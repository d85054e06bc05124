"""The small helpers every windowed stage stamps its elements and rows with."""
import datetime
import random

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.plumbing.event_windows import in_global_window_at, micros_of_utc, utc, utc_of_micros

UTC = datetime.timezone.utc


def test_a_value_in_the_global_window_is_the_one_beam_makes_with_its_timestamp():
    made = in_global_window_at({"reportId": "r-1"}, 1_795_392_007_000_001)
    assert made == WindowedValue({"reportId": "r-1"}, Timestamp(micros=1_795_392_007_000_001), (GlobalWindow(),))
    assert made.timestamp == Timestamp(micros=1_795_392_007_000_001)


def test_micros_become_a_datetime_exactly_even_where_float_seconds_would_round():
    far = 66_634_589_261_878_248  # 4081: float seconds are 2 µs apart there
    assert utc_of_micros(far) == datetime.datetime(4081, 7, 25, 16, 7, 41, 878248, tzinfo=UTC)
    assert utc(Timestamp(micros=far)) == utc_of_micros(far)
    assert utc_of_micros(-1) == datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_epoch_seconds_and_timestamps_give_the_same_utc_datetime():
    assert utc(1_795_392_000) == utc(Timestamp(1_795_392_000)) == datetime.datetime(2026, 11, 23, tzinfo=UTC)
    assert utc(1_795_392_000.5) == datetime.datetime(2026, 11, 23, 0, 0, 0, 500000, tzinfo=UTC)


def test_a_datetime_becomes_the_micros_beams_own_conversion_gives():
    rng = random.Random(7)
    for _ in range(20_000):
        micros = rng.randrange(-10**15, 4 * 10**15)
        moment = utc_of_micros(micros)
        assert micros_of_utc(moment) == Timestamp.from_utc_datetime(moment).micros == micros
    kolkata = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    in_kolkata = datetime.datetime(2026, 11, 23, 5, 30, 0, 7, tzinfo=kolkata)
    assert micros_of_utc(in_kolkata) == Timestamp.from_utc_datetime(in_kolkata.astimezone(UTC)).micros
