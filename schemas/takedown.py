"""Parquet schema of `notice_outcomes/`: where every takedown notice stands (no URLs, no report ids)."""
import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

NOTICE_OUTCOMES = pa.schema([
    ("notice_id", pa.string()),
    ("provider", pa.string()),
    ("hosting_country", pa.string()),
    ("day", pa.string()),
    ("reports", pa.int64()),
    ("sent", TIMESTAMP),
    ("checked", TIMESTAMP),
    ("attempts", pa.int64()),
    ("status", pa.string()),
    ("final", pa.bool_()),
    ("hours_to_removal", pa.float64()),
])
