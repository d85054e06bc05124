"""Agency reads over an index of 1M routed reports: pages of 100 for one agency, in the index and over HTTP.

    .venv/bin/python -m benchmarks.bench_agencies [--reports 1000000] [--pages 2000]     # from the repo root

Builds the SQLite index from synthetic routed records directly (jurisdictions drawn from the demo's
country mix, so one agency, India, holds about a quarter of them), then times: a page of 100 newest
first at random depths (`before` cursor), a page by priority, a page by `since` cursor, one report's
detail, for a one-code agency (intl-in) and a two-code one (a CA task force: US-CA-LA and US-CA); the
same pages through the service on uvicorn with a real HTTP client (credential remembered after the
first call); and, as the baseline measured in the same run, the same page read with one plain SQLite
query on the feed index with no jurisdiction filter. Prints p50/p99 and reports listed per second;
asserts nothing. Goal: a page of 100 in ≤ 20 ms p99.
"""
import argparse
import os
import random
import statistics
import tempfile
import threading
import time

import httpx
import uvicorn

from schemas import reference_table
from services.agencies.app import create_app
from services.agencies.directory import Agency, AgencyDirectory
from services.agencies.events import AuditLog
from services.agencies.index import ReportIndex
from services.common.credentials import hash_secret
from tests.agency_service import free_port, routed_record

PAGE = 100
PRIORITIES = ("P1", "P2", "P3")


def jurisdiction_weights():
    """The demo's country mix, with a slice of US reports on the CA task force codes and some UNKNOWN."""
    weights = {row["iso_alpha2"]: float(row["reports"]) for row in reference_table("country_mix")
               if row["iso_alpha2"] != "US"}
    total = sum(weights.values())
    weights.update({code: share * total for code, share in
                    (("US-CA-LA", 0.006), ("US-CA", 0.003), ("US-WA", 0.004), ("UNKNOWN", 0.04))})
    return list(weights), list(weights.values())


def synthetic_records(count, seed=2026):
    rng = random.Random(seed)
    codes, weights = jurisdiction_weights()
    chosen = rng.choices(codes, weights, k=count)
    for n, code in enumerate(chosen):
        minute = n * 4 * 60 // count
        yield routed_record(f"ESP{n % 12:02d}-2026-{n:07d}", code, priority=rng.choices(PRIORITIES, (1, 30, 69))[0],
                            submitted_at=f"2026-11-23T{minute // 60:02d}:{minute % 60:02d}:{n % 60:02d}Z",
                            user=f"user-{rng.randrange(200_000)}", md5=f"{rng.getrandbits(128):032x}",
                            bundle_id=f"bnd-{rng.randrange(50_000):024x}")


def build_index(folder, count):
    index = ReportIndex(os.path.join(folder, "index.sqlite"), None, folder)
    started = time.perf_counter()
    batch = []
    for record in synthetic_records(count):
        batch.append(record)
        if len(batch) == 20_000:
            with index._write() as connection:
                index.add_records(batch, time.time(), connection)
            batch.clear()
    if batch:
        with index._write() as connection:
            index.add_records(batch, time.time(), connection)
    return index, time.perf_counter() - started


def percentiles(samples):
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def timed(function, arguments):
    samples = []
    for argument in arguments:
        started = time.perf_counter()
        function(argument)
        samples.append(time.perf_counter() - started)
    return samples


def report(name, samples, rows_per_call=PAGE):
    p50, p99 = percentiles(samples)
    rate = rows_per_call * len(samples) / sum(samples)
    print(f"  {name:<58} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {rate:>10,.0f} reports/s")
    return p99


def serve_in_thread(app, port):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=2000, help="pages timed per case")
    args = parser.parse_args(argv)
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-agencies-") as folder:
        index, seconds = build_index(folder, args.reports)
        size = os.path.getsize(os.path.join(folder, "index.sqlite")) / 2**20
        print(f"index of {args.reports:,} routed reports built in {seconds:.1f} s "
              f"({args.reports / seconds:,.0f} reports/s), {size:,.0f} MiB")
        rng = random.Random(7)
        top = index._next_seq(index.connection())
        cursors = [rng.randrange(top // 10, top) for _ in range(args.pages)]
        agencies = {"intl-in": ("IN",), "icac-us-ca-la": ("US-CA-LA", "US-CA")}
        for agency_id, codes in agencies.items():
            held = index.count_for(codes)
            print(f"{agency_id} ({' '.join(codes)}): {held:,} reports")
            report("page of 100, newest first (random depth)",
                   timed(lambda c: index.list_for(codes, before=c, limit=PAGE), cursors))
            report("page of 100, priority P1",
                   timed(lambda c: index.list_for(codes, before=c, priority="P1", limit=PAGE), cursors))
            report("page of 100 by since cursor", timed(lambda c: index.list_for(codes, since=c - top // 10, limit=PAGE), cursors))
            ids = [row["report_id"] for row in index.list_for(codes, limit=500)]
            report("one report's detail", timed(lambda i: index.get_for(codes, i), ids * 4), rows_per_call=1)
        connection = index.connection()
        print("baseline: the same page with one SQLite query on the feed index, no jurisdiction filter")
        baseline = report("page of 100, newest first", timed(lambda c: connection.execute(
            "SELECT feed_seq, report_id, submitted_at, priority, incident_type, match_summary, bundle_id, jurisdiction, "
            "routed_jurisdiction FROM reports WHERE feed_seq < ? ORDER BY feed_seq DESC LIMIT 100", (c,)).fetchall(),
            cursors))

        secret = "bench-secret"
        directory = AgencyDirectory([Agency("intl-in", "India", ("IN",), hash_secret(secret), "active", None)])
        app = create_app(index, directory, AuditLog(os.path.join(folder, "audit.jsonl")), rate=1e9, burst=10**9,
                         refresh_seconds=3600)
        port = free_port()
        server, thread = serve_in_thread(app, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("intl-in", secret)) as client:
                client.get("/reports")
                print("over HTTP (uvicorn, one keep-alive client, audit log written per call)")
                http_p99 = report("GET /reports?limit=100&before=<cursor>",
                                  timed(lambda c: client.get("/reports", params={"before": c}).raise_for_status(),
                                        cursors[: args.pages // 2]))
        finally:
            server.should_exit = True
            thread.join()
        print(f"HTTP page p99 {http_p99:.1f} ms vs goal 20 ms; unfiltered SQLite page p99 {baseline:.2f} ms")


if __name__ == "__main__":
    main()
