"""The progress line of a local batch run: read, routed, dead-lettered and rate every few seconds.

Why not Beam metrics, as streaming does: for a bounded pipeline the DirectRunner hands over to the
FnApiRunner, whose `pipeline.run()` returns only once the pipeline is DONE (measured: a 3,000-element
pipeline's `run()` returned after 12.2 s, in state DONE), and the progress it requests from its workers is
not exposed; so no counter can be read while it runs. Instead the run adds three counting taps (on the messages read, the routed records and
the dead letters) that tally into this process. They see the in-memory workers, the default; with
`--direct_running_mode multi_processing` the workers are other processes and the line says only how long
the run has been going. The summary's counts still come from Beam metrics.
"""
import threading
import time
from collections import Counter

import apache_beam as beam

from pipelines import streaming

TAPPED = ("read", "routed", "dead_lettered")
_tallies = {}
_lock = threading.Lock()


def count_into(element, run_id, name):
    """A tap: counts the element for run `run_id` and emits nothing."""
    with _lock:
        _tallies[run_id][name] += 1
    return ()


def add_taps(outputs, run_id):
    """Counting taps on the `messages`, `routed` and `dead_letters` outputs of `build_pipeline`."""
    _tallies[run_id] = Counter()
    for name, key in zip(TAPPED, ("messages", "routed", "dead_letters")):
        _ = outputs[key] | f"Progress{name.title().replace('_', '')}" >> beam.FlatMap(count_into, run_id, name)


def counts_of(run_id):
    with _lock:
        return dict(_tallies.get(run_id, {}))


def format_batch_progress(elapsed, counts, in_process=True):
    if not in_process:
        return f"[{elapsed:6.1f}s] running (worker processes: counts at the end)"
    read = counts.get("read", 0)
    return (f"[{elapsed:6.1f}s] read {read}  routed {counts.get('routed', 0)}  "
            f"dead-lettered {counts.get('dead_lettered', 0)}  {read / max(elapsed, 1e-9):,.0f} reports/s")


def run_with_progress(pipeline, run_id, in_process=True, every=None, out=print):
    """Runs a bounded pipeline to the end, printing a progress line every `every` seconds (default: as often
    as streaming's); returns its result."""
    every = every or streaming.PROGRESS_EVERY_SECONDS
    start, stop = time.monotonic(), threading.Event()
    line = lambda: format_batch_progress(time.monotonic() - start, counts_of(run_id), in_process)
    reporter = threading.Thread(target=streaming.print_every, args=(stop, every, line, out), daemon=True)
    reporter.start()
    try:
        result = pipeline.run()
        result.wait_until_finish()
        return result
    finally:
        stop.set()
        _tallies.pop(run_id, None)
