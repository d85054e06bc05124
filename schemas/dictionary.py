"""The data dictionary of the pipeline's outputs, generated from the schemas (docs/DATA_DICTIONARY.md).

    python -m schemas.dictionary > docs/DATA_DICTIONARY.md

tests/test_data_dictionary.py checks the committed file is what this prints, so it cannot drift.
"""
import json
from importlib import resources

from schemas.tables import ALERT_SCHEMA, BUNDLE_SCHEMA, TABLES, doc_of


def avro_type_name(avro_type):
    """A short reading of an Avro type: `string`, `string or null`, `array of HashValue`, ..."""
    if isinstance(avro_type, list):
        names = [avro_type_name(member) for member in avro_type if member != "null"]
        return " or ".join(names) + (" or null" if "null" in avro_type else "")
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return f"array of {avro_type_name(avro_type['items'])}"
        if "logicalType" in avro_type:
            return f"{avro_type['type']} ({avro_type['logicalType']})"
        return avro_type.get("name", avro_type["type"])
    return avro_type


def nested_fields(avro_type):
    """The fields of the record inside a field's type (directly, in a union or as array items), if any."""
    members = avro_type if isinstance(avro_type, list) else [avro_type]
    for member in members:
        if isinstance(member, dict) and member.get("type") == "record":
            return member["fields"]
        if isinstance(member, dict) and member.get("type") == "array" and isinstance(member["items"], dict):
            return nested_fields(member["items"])
    return []


def avro_rows(fields, prefix=""):
    for field in fields:
        path = f"{prefix}{field['name']}"
        yield path, avro_type_name(field["type"]), field.get("doc", "")
        yield from avro_rows(nested_fields(field["type"]), f"{path}.")


def arrow_rows(schema):
    return [(field.name, str(field.type), doc_of(field)) for field in schema]


def table(rows):
    lines = ["| field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {kind} | {doc.replace('|', '/')} |" for name, kind, doc in rows]
    return "\n".join(lines)


def dictionary():
    routed = json.loads(resources.files("schemas").joinpath("routed_report.avsc").read_text())
    trend_columns = {}
    for schema in TABLES.values():
        for row in arrow_rows(schema):
            trend_columns.setdefault(row[0], row)
    sections = [
        "# Data dictionary",
        "Generated from the schemas by `python -m schemas.dictionary`; do not edit by hand. All times are UTC.",
        "## Routed records (`routed/jurisdiction=<code>/*.avro`, schemas/routed_report.avsc)",
        routed.get("doc", ""),
        table(avro_rows(routed["fields"])),
        "## Trend tables (`trends/<table>/dt=YYYY-MM-DD/*.parquet`, schemas/tables.py)",
        "Tables: " + ", ".join(f"`{name}`" for name in sorted(TABLES)) + ". Each has the window, its dimension "
        "column (none in `*_total`), the counts and the pane; keep the latest pane per window and dimension value.",
        table(trend_columns.values()),
        "## Incident bundles (`bundles/dt=<first seen date>/*.parquet`, schemas/tables.py)",
        table(arrow_rows(BUNDLE_SCHEMA)),
        "## Spike alerts (`alerts/dt=YYYY-MM-DD/*.jsonl`, schemas/tables.py; times as ISO 8601 with Z)",
        table(arrow_rows(ALERT_SCHEMA)),
    ]
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    print(dictionary(), end="")
