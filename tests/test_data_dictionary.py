"""The data dictionary is generated from the schemas, documents every field and is up to date."""
import json
import pathlib
from importlib import resources

from schemas.dictionary import avro_rows, dictionary
from schemas.tables import ALERT_SCHEMA, BUNDLE_SCHEMA, TABLES, doc_of

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "DATA_DICTIONARY.md"


def test_every_field_of_every_output_schema_has_a_doc():
    routed = json.loads(resources.files("schemas").joinpath("routed_report.avsc").read_text())
    undocumented = [path for path, _, doc in avro_rows(routed["fields"]) if not doc]
    undocumented += [field.name for schema in [*TABLES.values(), BUNDLE_SCHEMA, ALERT_SCHEMA]
                     for field in schema if not doc_of(field)]
    assert undocumented == []


def test_the_committed_dictionary_is_the_generated_one():
    assert DOCS.read_text() == dictionary(), "regenerate: python -m schemas.dictionary > docs/DATA_DICTIONARY.md"
    assert "| `files.matches.distance` | int |" in DOCS.read_text()
