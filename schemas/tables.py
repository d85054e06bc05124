"""Arrow/Parquet schemas of the analyst tables: trend tables, incident bundles and spike alerts.

They live here, beside the Avro schemas, so that readers (the `tipline trends` CLI, the data dictionary)
import schemas rather than pipeline stages. Every field carries a `doc` in its metadata.
"""
import pyarrow as pa

WINDOW_KIND_NAMES = ("hourly", "sliding24h")
DIMENSIONS = ("jurisdiction", "country", "incident_type", "esp", "match_class", "annotation")
TOTAL = "total"
COUNTS = ("reports", "files", "users", "bundles")

TIMESTAMP = pa.timestamp("us", tz="UTC")


def field(name, arrow_type, doc):
    return pa.field(name, arrow_type, metadata={"doc": doc})


def doc_of(schema_field):
    return (schema_field.metadata or {}).get(b"doc", b"").decode("utf-8")


WINDOW_FIELDS = [
    field("window_start", TIMESTAMP, "Start of the event-time window (UTC, inclusive)."),
    field("window_end", TIMESTAMP, "End of the event-time window (UTC, exclusive)."),
]
PANE_FIELDS = [
    field("pane_index", pa.int64(), "Firing of this window: 0 on time, 1+ late re-firings; keep the highest."),
    field("pane_timing", pa.string(), "ON_TIME or LATE (a re-firing with late reports, accumulated)."),
]
DIMENSION_DOCS = {
    "jurisdiction": "Jurisdiction code the reports were routed to (ISO 3166, US-<state>[-<task force>], UNKNOWN).",
    "country": "ISO 3166 alpha-2 country the reports were located in; null when unlocated.",
    "incident_type": "Incident type of the reports (schemas/incident_types.csv).",
    "esp": "Reporting electronic service provider id.",
    "match_class": "known (a hash-bank match), new (media or hashes, no match) or no_media.",
    "annotation": "A report annotation (e.g. sextortion); a report counts once under each it carries.",
}
COUNT_DOCS = {
    "reports": "Reports in the window.",
    "files": "Files of those reports.",
    "users": "Distinct reported users (an ESP's user id is unique only within that ESP).",
    "bundles": "Distinct incident bundles.",
}


def table_name(kind, dimension):
    return f"{kind}_{TOTAL}" if dimension == TOTAL else f"{kind}_by_{dimension}"


def table_schema(dimension):
    """window bounds, the dimension column (none for totals), the four counts, the pane."""
    dimension_fields = [] if dimension == TOTAL else [field(dimension, pa.string(), DIMENSION_DOCS[dimension])]
    return pa.schema(WINDOW_FIELDS + dimension_fields
                     + [field(count, pa.int64(), COUNT_DOCS[count]) for count in COUNTS] + PANE_FIELDS)


TABLES = {table_name(kind, dimension): table_schema(dimension)
          for kind in WINDOW_KIND_NAMES for dimension in (TOTAL,) + DIMENSIONS}

BUNDLE_SCHEMA = pa.schema([
    field("bundle_id", pa.string(), "Id every routed report of the bundle carries (routed record bundleId)."),
    field("signature", pa.string(), "Content signature: bank:<bank>:<entry>, <hash type>:<hex> or esp-batch:<reportId>."),
    field("signature_kind", pa.string(), "bank_entry, exact_hash or esp_batch."),
    *WINDOW_FIELDS,
    field("first_seen", TIMESTAMP, "Event time of the bundle's first report (UTC)."),
    field("last_seen", TIMESTAMP, "Event time of the bundle's last report so far (UTC)."),
    field("reports", pa.int64(), "Reports in the bundle."),
    field("users", pa.int64(), "Distinct reported users (counts only, never the ids)."),
    field("esps", pa.int64(), "Distinct reporting ESPs."),
    field("jurisdictions", pa.list_(pa.string()), "Jurisdictions the bundle's reports were routed to."),
    *PANE_FIELDS,
])

ALERT_SCHEMA = pa.schema([
    field("alert_id", pa.string(), "Deterministic id of (kind, key, window)."),
    field("kind", pa.string(), "What spiked: signature, esp or jurisdiction."),
    field("key", pa.string(), "The content signature, ESP id or jurisdiction code that spiked."),
    *WINDOW_FIELDS,
    field("count", pa.int64(), "Reports of the key in the window."),
    field("baseline", pa.float64(), "Exponentially weighted mean of the key's past window counts."),
    field("ratio", pa.float64(), "count / max(baseline, the rule's floor)."),
    field("history_windows", pa.int64(), "Windows since the key was first seen."),
])
