"""TiplineOptions: every option of `tipline run`, as a Beam `PipelineOptions` subclass."""
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.dedup import DEFAULT_HORIZON_HOURS
from transforms.demo.packaged import packaged
from transforms.parse import DEFAULT_MAX_CLOCK_SKEW_HOURS, DEFAULT_MAX_FILES_PER_REPORT, DEFAULT_MAX_MESSAGE_BYTES
from transforms.read import SOURCES

DEFAULT_OUTPUT_DIR = "./tipline-out"

def hash_bank_paths(hash_banks, negative_hash_banks):
    """(banks, negative banks): the demo bank and its negative bank when no bank is named; the demo data is
    `packaged:NAME`, so each worker resolves it to its own installed copy."""
    if hash_banks:
        return list(hash_banks), list(negative_hash_banks or [])
    return [packaged("demo-bank.csv")], list(negative_hash_banks or [packaged("demo-negative-bank.csv")])


class TiplineOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
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
                            help="output folder: routed/, trends/, dead_letter/, summary.json")
        parser.add_argument("--geoip-city-db", dest="geoip_city_db", default=None,
                            help="GeoIP2/GeoLite2 City .mmdb (default: the synthetic demo database)")
        parser.add_argument("--geoip-asn-db", dest="geoip_asn_db", default=None, help="GeoLite2 ASN .mmdb")
        parser.add_argument("--geoip-anonymous-db", dest="geoip_anonymous_db", default=None,
                            help="GeoIP2 Anonymous-IP .mmdb (anonymous, VPN, hosting, Tor -> UNKNOWN)")
        parser.add_argument("--hash-bank", dest="hash_banks", action="append", default=None,
                            help="hash bank, CSV or Parquet (repeatable; default: the demo bank)")
        parser.add_argument("--negative-hash-bank", dest="negative_hash_banks", action="append", default=None,
                            help="bank of known benign content never reported as a match (repeatable)")
        parser.add_argument("--media-root", dest="media_roots", action="append", default=None,
                            help="where a report's contentUri may point: a local folder, file:///folder or a "
                                 "Beam filesystem prefix such as gs://bucket/quarantine (repeatable); any "
                                 "other contentUri is never opened and its file is unhashable")
        parser.add_argument("--bank-refresh-seconds", type=int, default=60,
                            help="how often workers look for changed bank files")
        parser.add_argument("--dedup-horizon-hours", type=float, default=DEFAULT_HORIZON_HOURS,
                            help="event-time horizon within which a redelivered reportId is dropped")
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

    def uses_demo_data(self):
        return self.geoip_city_db is None or self.hash_banks is None

    def resolved_city_db(self):
        return self.geoip_city_db or packaged("demo-city.mmdb")

    def resolved_hash_banks(self):
        return hash_bank_paths(self.hash_banks, self.negative_hash_banks)[0]

    def resolved_negative_hash_banks(self):
        return hash_bank_paths(self.hash_banks, self.negative_hash_banks)[1]
