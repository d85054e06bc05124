"""What a streaming job's spike alerts hold while an hour of watched keys fires, on the DirectRunner.

    .venv/bin/python benchmarks/bench_alert_firing.py                 # 50,000 signatures in one hour
    .venv/bin/python benchmarks/bench_alert_firing.py --keys 100000
    .venv/bin/python benchmarks/bench_alert_firing.py --keys 100000 --hours 4   # firings among kept baselines

Nearly every report brings a signature of its own, so an hour's window of spike counts fires about one count
a report at once when the watermark passes its end. This streams `--keys` distinct signatures (and a few
volume keys) into one hour through a TestStream (in bundles of 500), passes the hour, and runs the counts to
the bucketed detector: as a pane per bucket (`streaming_alerts_in_buckets`: one pickled list of counts per
bucket), and, as the baseline in the same run, an element per key (the window's pane split per key, then
each count keyed to its bucket: the path before, into today's detector). Each form runs in a process of its
own; printed: the peak of what is allocated from the window's firing on and still held (tracemalloc, started
when the window fires: the panes, the elements made from them while their bundles last, the detector's
state), and the CPU seconds of the whole run. With `--hours`, as many hours follow one another, each of
`--keys` new signatures and fired before the next begins, so that each firing looks its keys up among the
baselines the hours before it left. Prints figures, never asserts.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOUR = 3600
FORMS = ("element per key (baseline)", "list per bucket")


def traced_from_the_firing():
    """Starts tracemalloc when the window's pane fires (the local windowed combine's timer callback)."""
    from transforms.plumbing.local_windows import CombineInWindowsFn

    fire_and_forget = CombineInWindowsFn.fire_and_forget

    def traced(self, *args):
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        yield from fire_and_forget(self, *args)

    CombineInWindowsFn.fire_and_forget = traced


def run_form(form, keys, hours):
    """One form's run in this process: (peak traced MB from the first firing on, CPU seconds)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms import window
    from apache_beam.transforms.window import TimestampedValue

    from transforms.alerts import SpikeAlerts, _SpikeDetectorInBucketFn, key_by_detector_bucket
    from transforms.reports.signatures import compact_signature

    volume = (("esp", "esp-1"), ("jurisdiction", "GB"))
    stream = TestStream().advance_watermark_to(0)
    for hour in range(hours):
        elements = [TimestampedValue((volume + (compact_signature(f"md5:{hour * keys + n:032x}"),), 1),
                                     hour * HOUR + n * HOUR / keys) for n in range(keys)]
        for start in range(0, keys, 500):  # in bundles of 500, as a stream brings them: not one input bundle
            stream = stream.add_elements(elements[start:start + 500])
        stream = stream.advance_watermark_to((hour + 1) * HOUR)
    stream = stream.advance_watermark_to((hours + 1) * HOUR).advance_watermark_to_infinity()
    del elements
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stage = SpikeAlerts(tempfile.mkdtemp())
    traced_from_the_firing()
    began = time.process_time()
    with beam.Pipeline(options=options) as p:
        keyed = p | stream
        if form == FORMS[1]:
            alerts, _ = stage.streaming_alerts_in_buckets(keyed)
        else:
            alerts = (stage.window_counts(keyed)
                      | "KeyTimeline" >> beam.WindowInto(window.GlobalWindows())
                      | "KeyByDetectorBucket" >> beam.ParDo(key_by_detector_bucket(1024))
                      | "DetectSpikesInBuckets" >> beam.ParDo(_SpikeDetectorInBucketFn(
                          stage.rules, stage.window_seconds, stage.forget_after_windows)))
        _ = alerts | beam.Map(len)
    seconds = time.process_time() - began
    return tracemalloc.get_traced_memory()[1] / 1e6, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=50_000, help="distinct signatures an hour")
    parser.add_argument("--hours", type=int, default=1)
    parser.add_argument("--form", choices=FORMS, help=argparse.SUPPRESS)  # one form's run, in a child process
    args = parser.parse_args()
    if args.form:
        peak, seconds = run_form(args.form, args.keys, args.hours)
        print(f"{peak:.1f} {seconds:.2f}")
        return
    print(f"{args.hours} hour(s) of {args.keys:,} distinct signatures each (and 2 volume keys), each hour fired at "
          f"once; os.cpu_count() = {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    figures = {}
    for form in FORMS:
        out = subprocess.run([sys.executable, __file__, "--keys", str(args.keys), "--hours", str(args.hours),
                              "--form", form],
                             check=True, capture_output=True, text=True).stdout.split()
        peak, seconds = float(out[-2]), float(out[-1])
        figures[form] = peak
        print(f"  {form:28s} peak held from the first firing on {peak:6.1f} MB "
              f"({peak * 1e6 / (args.keys * args.hours):5.0f} bytes a key); whole run {seconds:.1f} CPU s")
    baseline, now = figures.values()
    print(f"  ratio of the peaks, list per bucket / baseline: {now / baseline:.2f}")


if __name__ == "__main__":
    main()
