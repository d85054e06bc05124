"""`tipline serve <service>`: the HTTP services, each on uvicorn.

    tipline serve agencies --output tipline-out --agencies agencies.csv --port 8080
    tipline serve intake --credentials providers.jsonl --store intake.sqlite --quarantine-root /srv/quarantine \\
        --project P --topic tips
    tipline serve intake --credentials providers.jsonl --add-provider esp-17 --provider-name ExampleSocial

`intake`: providers and the public report through it (the CyberTipline reporting API's shape).
`agencies`: each agency pulls the reports of its own jurisdictions (GET /reports, GET /reports/{id},
POST /reports/{id}/ack; the page at /ui), indexing the routed output as the pipeline writes it.
"""
import argparse
import json
import os
import pathlib
import secrets

from pipelines.errors import UsageError
from pipelines.options import DEFAULT_OUTPUT_DIR
from pipelines.reports_cli import default_agencies_table

SERVICES = {}
WORKER_ARGS = "TIPLINE_INTAKE_WORKER_ARGS"
# uvicorn kills and restarts a worker that does not answer its health check in time (default 5 s); on a
# loaded machine a worker still importing its app missed that, over and over, and never served.
WORKER_HEALTHCHECK_SECONDS = 60


def register(subparsers):
    parser = subparsers.add_parser("serve", help="run an HTTP service (intake: the providers' door; agencies: the agencies' door)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    services = parser.add_subparsers(dest="service", required=True)
    for register_service in SERVICES.values():
        register_service(services)


def register_intake(services):
    parser = services.add_parser("intake", help="the reporting service for providers and the public",
                                 description="The CyberTipline-compatible reporting service in front of the Pub/Sub "
                                             "topic the pipeline reads (README: The intake service).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--credentials", required=True,
                        help="providers' accounts, JSON Lines of hashed passwords (made with --add-provider)")
    parser.add_argument("--add-provider", metavar="ID", default=None,
                        help="add a provider account to --credentials and exit; the password is read from "
                             "TIPLINE_PROVIDER_PASSWORD or generated and printed once")
    parser.add_argument("--provider-name", default=None, help="with --add-provider: the provider's name (espName)")
    parser.add_argument("--store", default="intake.sqlite", help="SQLite file of open reports (survives restarts)")
    parser.add_argument("--quarantine-root", default="./quarantine",
                        help="folder or gs:// prefix for uploaded media; give the pipeline the same as --media-root")
    parser.add_argument("--project", default=None, help="Pub/Sub project of --topic")
    parser.add_argument("--topic", default=None, help="topic the pipeline reads: name or projects/P/topics/T")
    parser.add_argument("--create-topic", action="store_true",
                        help="create the topic when missing (e.g. on the emulator)")
    parser.add_argument("--max-upload-bytes", type=int, default=25 * 2**20, help="largest uploaded file (25 MiB)")
    parser.add_argument("--max-document-bytes", type=int, default=2**20, help="largest XML or JSON document (1 MiB)")
    parser.add_argument("--max-files-per-report", type=int, default=100, help="uploads per report (100)")
    parser.add_argument("--provider-rate", type=float, default=200,
                        help="requests/s per provider (all workers together)")
    parser.add_argument("--provider-burst", type=float, default=None,
                        help="requests a provider may make at once above the rate (default twice the rate)")
    parser.add_argument("--public-rate", type=float, default=1, help="public reports/s per client address (all workers together), bursts of 5")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes sharing the store and the rate limits")
    parser.add_argument("--publish-batch-ms", type=float, default=50,
                        help="how long a finished report may wait to be published with others (50 ms): a finish "
                             "answers up to this much later, and each publish costs half the CPU of a 10-ms batch")
    parser.set_defaults(func=main_intake)


SERVICES["intake"] = register_intake


def serve_agencies(args):
    import uvicorn

    from services.agencies.app import create_app
    from services.agencies.directory import DirectoryError, WatchedDirectory
    from services.agencies.events import AuditLog
    from services.agencies.index import open_index

    if not pathlib.Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} is not a folder (the pipeline's output)")
    try:
        directory = WatchedDirectory(args.agencies)
    except (OSError, DirectoryError) as error:
        raise UsageError(f"--agencies: {error}") from None
    index = open_index(args.output, args.state_dir)
    audit = AuditLog(index.path.parent / "audit.jsonl")
    app = create_app(index, directory, audit, rate=args.rate_limit, burst=args.burst,
                     refresh_seconds=args.refresh_seconds)
    print(f"agencies service on http://{args.host}:{args.port}/ui ({len(directory.current.agencies)} agencies, "
          f"audit log {audit.path})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def register_agencies(services):
    parser = services.add_parser("agencies", help="agencies pull their own reports (API and page)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help=f"the pipeline's output folder (default {DEFAULT_OUTPUT_DIR})")
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


SERVICES["agencies"] = register_agencies


def add_provider(args):
    from services.common.credentials import CredentialsError, add_account

    password = os.environ.get("TIPLINE_PROVIDER_PASSWORD")
    generated = password is None
    password = password or secrets.token_urlsafe(24)
    try:
        add_account(args.credentials, args.add_provider, args.provider_name or args.add_provider, password)
    except CredentialsError as error:
        raise UsageError(f"--credentials: {error}") from None
    shown = f"; password (shown once): {password}" if generated else ""
    print(f"added provider {args.add_provider} to {args.credentials}{shown}")
    return 0


def intake_config(args):
    """The service's configuration; UsageError naming the flag or file that is wrong."""
    from pipelines.publish import resource_path
    from services.common.credentials import CredentialsError, load_accounts
    from services.intake.app import IntakeConfig

    if not args.project or not args.topic:
        raise UsageError("--project and --topic are required: the topic the pipeline reads")
    try:
        accounts = load_accounts(args.credentials)
    except CredentialsError as error:
        raise UsageError(f"--credentials: {error}")
    store_folder = os.path.dirname(os.path.abspath(args.store))
    if not os.path.isdir(store_folder):
        raise UsageError(f"--store: folder {store_folder} does not exist")
    for flag in ("max_upload_bytes", "max_document_bytes", "max_files_per_report", "publish_batch_ms"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be positive")
    return IntakeConfig(store_path=args.store, quarantine_root=args.quarantine_root, accounts=accounts,
                        topic=resource_path(args.project, "topics", args.topic),
                        max_document_bytes=args.max_document_bytes, max_upload_bytes=args.max_upload_bytes,
                        max_files_per_report=args.max_files_per_report, provider_rate=args.provider_rate,
                        provider_burst=args.provider_burst or 2 * args.provider_rate, public_rate=args.public_rate,
                        publish_batch_seconds=args.publish_batch_ms / 1000)


def main_intake(args):
    if args.add_provider:
        return add_provider(args)
    import uvicorn

    from services.intake.app import create_app

    config = intake_config(args)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.create_topic:
        from google.cloud import pubsub_v1

        from pipelines.publish import ensure_topic

        ensure_topic(pubsub_v1.PublisherClient(), config.topic)
    print(f"intake on http://{args.host}:{args.port} publishing to {config.topic}; media in {config.quarantine_root}",
          flush=True)
    if args.workers == 1:
        uvicorn.run(create_app(config), host=args.host, port=args.port, access_log=False, log_level="warning")
        return 0
    os.environ[WORKER_ARGS] = json.dumps({name: value for name, value in vars(args).items() if name != "func"})
    uvicorn.run("pipelines.serve:intake_app_for_worker", factory=True, workers=args.workers, host=args.host,
                port=args.port, access_log=False, log_level="warning",
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS)
    return 0


def intake_app_for_worker():
    """The app in each worker process, from the options the parent checked."""
    from services.intake.app import create_app

    return create_app(intake_config(argparse.Namespace(**json.loads(os.environ[WORKER_ARGS]))))
