"""TiplineOptions: every option of `tipline run`, as a Beam `PipelineOptions` subclass.

Each of tipline's own flags is also accepted in Beam's snake_case spelling (`--geoip_city_db`), and any
argument neither tipline nor Beam knows is an error naming it (Beam itself only warns and drops it).
"""
import difflib

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipelines.errors import UsageError

from pipelines.bank_tools import add_video_matching_options

from transforms.dedup import DEFAULT_HORIZON_HOURS, STATE_FORMS
from transforms.demo.packaged import packaged
from transforms.reports.validation import DEFAULT_MAX_CLOCK_SKEW_HOURS, DEFAULT_MAX_FILES_PER_REPORT, DEFAULT_MAX_MESSAGE_BYTES
from transforms.read import SOURCES

DEFAULT_OUTPUT_DIR = "./tipline-out"
DATABASE_FLAGS = {"city": "--geoip-city-db", "asn": "--geoip-asn-db", "anonymous": "--geoip-anonymous-db",
                  "isp": "--geoip-isp-db"}
DATABASE_KIND_OF_FLAG = {flag: kind for kind, flag in DATABASE_FLAGS.items()}


def naming_the_flag(error):
    """A GeoIP database error as the user's error: a UsageError naming the flag the database was given to."""
    return UsageError(f"{DATABASE_FLAGS[error.kind]}: {error.detail}")

def hash_bank_paths(hash_banks, negative_hash_banks, no_hash_banks=False):
    """(banks, negative banks): the demo bank and its negative bank when no bank is named (and banks are not
    refused with --no-hash-banks); the demo data is `packaged:NAME`, so each worker resolves it to its own
    installed copy."""
    if hash_banks or no_hash_banks:
        return list(hash_banks or []), list(negative_hash_banks or [])
    return [packaged("demo-bank.csv")], list(negative_hash_banks or [packaged("demo-negative-bank.csv")])


class WithSnakeCase:
    """A parser (or argument group) whose `add_argument("--a-b", ...)` also accepts `--a_b`, the spelling of
    Beam's own flags, so `--geoip_city_db` is not silently dropped as unknown."""

    def __init__(self, parser):
        self.parser = parser

    def add_argument(self, *flags, **kwargs):
        snake = ["--" + flag[2:].replace("-", "_") for flag in flags if "-" in flag[2:]]
        return self.parser.add_argument(*flags, *snake, **kwargs)


class StrictArgumentParser(_BeamArgumentParser):
    """Every option Beam and tipline know; its errors are one-line `UsageError`s."""

    def error(self, message):
        raise UsageError(f"{message} (see tipline run --help)")


def known_options_parser():
    """A parser of every registered `PipelineOptions` class (tipline's and Beam's runners'), as Beam builds it."""
    parser = StrictArgumentParser(prog="tipline run", allow_abbrev=False)
    classes = {}
    for options_class in PipelineOptions.__subclasses__():
        classes.setdefault(str(options_class), options_class)
    for options_class in classes.values():
        options_class._add_argparse_args(parser)
    return parser


def check_arguments(argv):
    """Raises UsageError for an argument no options class knows, with the closest known flag."""
    parser = known_options_parser()
    _, unknown = parser.parse_known_args(argv)
    if not unknown:
        return
    first = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
    if not first.startswith("-"):
        raise UsageError(f"unexpected argument {first!r}: tipline run takes only --flags (see tipline run --help)")
    name = first.split("=", 1)[0]
    known = [flag for action in parser._actions for flag in action.option_strings]
    closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {closest[0]}?" if closest else " (see tipline run --help)"
    raise UsageError(f"unknown argument {name}{hint}")


def positive_hours(text):
    """A number of hours above zero (argparse names the flag when it is not)."""
    hours = float(text)
    if not hours > 0:
        raise ValueError(text)
    return hours


DASK_RUNNER_NAMES = ("dask", "DaskRunner")


class DaskEngineOptions(PipelineOptions):
    """`--runner dask`'s options, here and not in pipelines/dask_engine.py: importing Dask and distributed
    costs every run ~0.2 s, so only a Dask run imports the engine."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--dask-address", dest="dask_address", default=None,
                            help="--runner dask: a Dask scheduler HOST:PORT (default: a LocalCluster for the run)")
        parser.add_argument("--dask-workers", dest="dask_workers", type=int, default=2,
                            help="--runner dask without --dask-address: worker processes of the LocalCluster")


class TiplineOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser = WithSnakeCase(parser)
        parser.add_argument("--source", choices=SOURCES, default="synthetic",
                            help="where reports come from (default: the embedded synthetic stream)")
        parser.add_argument("--input", dest="input_pattern", default=None,
                            help="--source files: glob of JSON Lines files, or of .avro files")
        parser.add_argument("--subscription", default=None,
                            help="--source pubsub: projects/P/subscriptions/S")
        parser.add_argument("--duration", type=float, default=None,
                            help="--source pubsub on the DirectRunner: read this many seconds (from the "
                                 "first pull), drain, acknowledge, summarize")
        parser.add_argument("--route-topic-template", default=None,
                            help="also publish each routed record to its jurisdiction's topic, "
                                 "e.g. projects/P/topics/tips-{jurisdiction}")
        parser.add_argument("--create-route-topics", action="store_true",
                            help="create missing route topics (local runs and the emulator)")
        parser.add_argument("--output", dest="output_dir", default=DEFAULT_OUTPUT_DIR,
                            help="output folder: routed/, trends/, dead_letter/, summaries/<run id>.json, "
                                 "summary.json (the latest run's)")
        parser.add_argument("--geoip-city-db", dest="geoip_city_db", default=None,
                            help="GeoIP2/GeoLite2 City .mmdb (--source files/pubsub need it or --demo-data)")
        parser.add_argument("--geoip-asn-db", dest="geoip_asn_db", default=None, help="GeoLite2 ASN .mmdb")
        parser.add_argument("--geoip-anonymous-db", dest="geoip_anonymous_db", default=None,
                            help="GeoIP2 Anonymous-IP .mmdb (anonymous, VPN, hosting, Tor -> UNKNOWN)")
        parser.add_argument("--hash-bank", dest="hash_banks", action="append", default=None,
                            help="hash bank, CSV or Parquet (repeatable; --source files/pubsub need one, "
                                 "--no-hash-banks or --demo-data)")
        parser.add_argument("--no-hash-banks", dest="no_hash_banks", action="store_true",
                            help="match against no hash bank (hashes are still computed and routed)")
        parser.add_argument("--demo-data", dest="demo_data", action="store_true",
                            help="--source files/pubsub: use the embedded synthetic demo GeoIP database and "
                                 "banks for what is not given (never for real reports)")
        parser.add_argument("--check", dest="check_only", action="store_true",
                            help="preflight only: open every database, parse every bank, check the output, "
                                 "print the reference data found, and exit")
        parser.add_argument("--negative-hash-bank", dest="negative_hash_banks", action="append", default=None,
                            help="bank of known benign content never reported as a match (repeatable)")
        parser.add_argument("--media-root", dest="media_roots", action="append", default=None,
                            help="where a report's contentUri may point: a local folder, file:///folder or a "
                                 "Beam filesystem prefix such as gs://bucket/quarantine (repeatable); any "
                                 "other contentUri is never opened and its file is unhashable")
        parser.add_argument("--bank-refresh-seconds", type=int, default=60,
                            help="how often workers look for changed bank files and GeoIP databases")
        add_video_matching_options(parser)
        parser.add_argument("--dedup-horizon-hours", type=float, default=DEFAULT_HORIZON_HOURS,
                            help="event-time horizon within which a redelivered reportId is dropped")
        parser.add_argument("--dedup-state", choices=STATE_FORMS, default="auto",
                            help="streaming dedup state: per-key (one key per reportId, for Dataflow), bucketed "
                                 "(reportIds in 1,024 keys, ~24 bytes each, for the local runner), or auto (the "
                                 "default: bucketed on the DirectRunner, per-key elsewhere)")
        parser.add_argument("--bundle-gap-hours", type=positive_hours, default=24,
                            help="a signature seen again within this gap stays in the same incident bundle")
        parser.add_argument("--window-minutes", type=int, default=60,
                            help="event-time window of each routed file set")
        parser.add_argument("--allowed-lateness-hours", type=float, default=24,
                            help="how late (event time) a report may arrive and still update its window")
        parser.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                            help="larger messages are dead-lettered")
        parser.add_argument("--max-files-per-report", type=int, default=DEFAULT_MAX_FILES_PER_REPORT,
                            help="reports with more files are dead-lettered")
        parser.add_argument("--max-clock-skew-hours", type=float, default=DEFAULT_MAX_CLOCK_SKEW_HOURS,
                            help="reports whose submittedAt (body or Pub/Sub attribute) or incidentDateTime is "
                                 "more than this past the run's clock are dead-lettered")
        parser.add_argument("--synthetic-count", type=int, default=3000,
                            help="--source synthetic: number of reports")
        parser.add_argument("--synthetic-seed", type=int, default=2026, help="--source synthetic: random seed")
        parser.add_argument("--synthetic-hours", type=float, default=4,
                            help="--source synthetic: hours of event time the stream spans")

    def demo_data_used(self):
        """The demo files this run would fall back to, by flag (empty when every reference file is named)."""
        used = {}
        if self.geoip_city_db is None:
            used["--geoip-city-db"] = [self.resolved_city_db()]
        if not self.hash_banks and not self.no_hash_banks:
            used["--hash-bank"] = self.resolved_hash_banks() + self.resolved_negative_hash_banks()
        return used

    def check_reference_data(self):
        """Demo data only on purpose: files and Pub/Sub runs name their reference data or pass --demo-data."""
        if self.hash_banks and self.no_hash_banks:
            raise UsageError("--hash-bank and --no-hash-banks contradict each other; pass one of them")
        if self.source == "synthetic" or self.demo_data:
            return
        missing = list(self.demo_data_used())
        if missing:
            wanted = " and ".join("--hash-bank (or --no-hash-banks)" if flag == "--hash-bank" else flag
                                  for flag in missing)
            raise UsageError(f"--source {self.source} needs real reference data: {wanted} missing "
                             "(or --demo-data to run on the synthetic demo data on purpose)")

    def resolved_city_db(self):
        return self.geoip_city_db or packaged("demo-city.mmdb")

    def resolved_hash_banks(self):
        return hash_bank_paths(self.hash_banks, self.negative_hash_banks, self.no_hash_banks)[0]

    def resolved_negative_hash_banks(self):
        return hash_bank_paths(self.hash_banks, self.negative_hash_banks, self.no_hash_banks)[1]
