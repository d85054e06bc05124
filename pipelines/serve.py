"""`tipline serve <service>`: the HTTP services, each on uvicorn.

    tipline serve agencies --output tipline-out --agencies agencies.csv --port 8080

`agencies`: each agency pulls the reports of its own jurisdictions (GET /reports, GET /reports/{id},
POST /reports/{id}/ack; the page at /ui), indexing the routed output as the pipeline writes it.
"""
import argparse
import pathlib
import sys

from pipelines.reports_cli import DEFAULT_OUTPUT, default_agencies_table


def serve_agencies(args):
    import uvicorn

    from services.agencies.app import create_app
    from services.agencies.directory import DirectoryError, WatchedDirectory
    from services.agencies.events import AuditLog
    from services.agencies.index import open_index

    if not pathlib.Path(args.output).is_dir():
        print(f"tipline serve agencies: --output {args.output} is not a folder (the pipeline's output)", file=sys.stderr)
        return 2
    try:
        directory = WatchedDirectory(args.agencies)
    except (OSError, DirectoryError) as error:
        print(f"tipline serve agencies: --agencies: {error}", file=sys.stderr)
        return 2
    index = open_index(args.output, args.state_dir)
    audit = AuditLog(index.path.parent / "audit.jsonl")
    app = create_app(index, directory, audit, rate=args.rate_limit, burst=args.burst,
                     refresh_seconds=args.refresh_seconds)
    print(f"agencies service on http://{args.host}:{args.port}/ui ({len(directory.current.agencies)} agencies, "
          f"audit log {audit.path})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def add_agencies(services):
    parser = services.add_parser("agencies", help="agencies pull their own reports (API and page)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"the pipeline's output folder (default {DEFAULT_OUTPUT})")
    parser.add_argument("--agencies", default=default_agencies_table(),
                        help="agencies table CSV with hashed credentials (default: the demo table schemas/agencies.csv)")
    parser.add_argument("--state-dir", default=None,
                        help="index, referral/ack events and audit log (default <output>/agencies-state)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--refresh-seconds", type=float, default=5.0, help="how often new routed files are indexed")
    parser.add_argument("--rate-limit", type=float, default=20.0, help="requests a second per client address")
    parser.add_argument("--burst", type=int, default=60, help="requests a client may make at once above the rate")
    parser.set_defaults(func=serve_agencies)


def register(subparsers):
    """Adds `tipline serve` and its services to the `tipline` command."""
    serve = subparsers.add_parser("serve", help="run an HTTP service", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    services = serve.add_subparsers(dest="service", required=True)
    add_agencies(services)
    return serve
