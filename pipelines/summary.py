"""The run summary: counts from Beam metrics, reconciled (read = routed + duplicates + dead_lettered).

`read` counts messages: on the local Pub/Sub run a redelivery of a message already read in the run (a
lease lost) is dropped by the source before it is read, and counted apart as
`redeliveries_dropped_at_source`; deliveries pulled = read + redeliveries_dropped_at_source. `duplicates`
are other messages carrying a reportId already seen (a producer publishing a report twice, a redelivery
from an earlier run).

`side_stage_failures` counts what a stage after routing (bundles, trends, alerts, notices, their sinks)
could not do with an element: the report was routed and is counted as routed; only its bundle, trend row,
alert or notice is missing, and the dead letter under `dead_letter/stage=<stage>/` says why. They are kept
out of the reconciliation, which counts each message once.
"""
import json

from apache_beam.io.filesystems import FileSystems

from transforms.plumbing.metrics import NAMESPACE


def summarize(totals):
    """The summary dict of a run from its counters."""
    count = lambda name: totals.get((NAMESPACE, name), 0)
    by = lambda namespace: {name: value for (ns, name), value in sorted(totals.items())
                            if ns == f"{NAMESPACE}.{namespace}"}
    summary = {
        "read": count("read"),
        "routed": count("routed"),
        "duplicates": count("duplicates"),
        "dead_lettered": count("dead_lettered"),
        "redeliveries_dropped_at_source": count("redeliveries_dropped_at_source"),
        "routed_by_jurisdiction": by("routed_by_jurisdiction"),
        "dead_lettered_by_stage": by("dead_lettered_by_stage"),
        "side_stage_failures": count("side_stage_failures"),
        "side_stage_failures_by_stage": by("side_stage_failures_by_stage"),
        "other_counts": {name: value for (ns, name), value in sorted(totals.items())
                         if ns == NAMESPACE and name not in
                         ("read", "routed", "duplicates", "dead_lettered", "redeliveries_dropped_at_source",
                          "side_stage_failures", "trend_input_reports", "trend_counted_reports")},
    }
    summary["too_late_for_trends"] = count("trend_input_reports") - count("trend_counted_reports")
    summary["reconciled"] = summary["read"] == summary["routed"] + summary["duplicates"] + summary["dead_lettered"]
    return summary


def write_summary(summary, output_dir):
    """Writes the run's own account, `summaries/<run id>.json`, and `summary.json`, the latest run's; a later
    run (even an empty one) never erases an earlier one's. Returns the path of the run's own file."""
    text = json.dumps(summary, indent=2, sort_keys=True).encode("utf-8")
    own = FileSystems.join(output_dir, "summaries", f"{summary['run_id']}.json")
    for path in (own, FileSystems.join(output_dir, "summary.json")):
        with FileSystems.create(path) as handle:
            handle.write(text)
    return own


def format_summary(summary):
    """A few lines a person can read at the end of a run."""
    lines = [
        f"read {summary['read']}  routed {summary['routed']}  duplicates {summary['duplicates']}  "
        f"dead-lettered {summary['dead_lettered']}  "
        + ("(reconciled)" if summary["reconciled"] else "(DOES NOT RECONCILE)"),
        "routed by jurisdiction: " + ", ".join(
            f"{code} {count}" for code, count in sorted(
                summary["routed_by_jurisdiction"].items(), key=lambda item: -item[1])[:15])
        + (" ..." if len(summary["routed_by_jurisdiction"]) > 15 else ""),
    ]
    if summary.get("redeliveries_dropped_at_source"):
        lines.append(f"redeliveries dropped at the source: {summary['redeliveries_dropped_at_source']} "
                     "(Pub/Sub deliveries of messages already read in this run; not counted in read)")
    if summary["dead_lettered_by_stage"]:
        lines.append("dead-lettered by stage: " + ", ".join(
            f"{stage} {count}" for stage, count in summary["dead_lettered_by_stage"].items()))
    if summary.get("side_stage_failures"):
        lines.append(f"side-stage failures: {summary['side_stage_failures']} ("  + ", ".join(
            f"{stage} {count}" for stage, count in summary["side_stage_failures_by_stage"].items())
            + "; reports routed, their bundle, trend row, alert or notice dead-lettered; not in the reconciliation)")
    return "\n".join(lines)
