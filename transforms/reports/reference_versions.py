"""The reference data that decides a routed record: GeoIP databases, hash banks, jurisdiction tables.

A routed record carries it as `decidedWith` (schemas/routed_report.avsc), so "why did this report come to
us" can be answered from the record alone, after the banks or the GeoIP databases have changed. The run
summary's `reference_data` block (pipelines/preflight.py) says the same for a whole run.
"""
import dataclasses
import hashlib
from collections import Counter
from importlib import metadata, resources

from transforms.location.geoip import database_provenance
from transforms.matching.banks import read_bank
from transforms.plumbing.reference_files import sha256_of, stage

JURISDICTION_TABLES = ("jurisdictions", "icac_task_forces", "us_city_counties")
VERSION_DIGITS = 16  # of a SHA-256: enough to tell versions of one file apart


@dataclasses.dataclass(frozen=True)
class ReferenceSources:
    """The reference files a run reads (paths on any Beam filesystem, or `packaged:NAME`)."""

    city_db: str
    asn_db: str | None = None
    anonymous_db: str | None = None
    hash_banks: tuple = ()
    negative_hash_banks: tuple = ()

    def geoip_databases(self):
        """(kind, path) of each configured database."""
        return [(kind, path) for kind, path in (("city", self.city_db), ("asn", self.asn_db),
                                                 ("anonymous", self.anonymous_db)) if path]

    def paths(self):
        """Every file, for the refresh check (size and update time)."""
        return [path for _, path in self.geoip_databases()] + list(self.hash_banks) + list(self.negative_hash_banks)


def tipline_version():
    try:
        return metadata.version("tipline")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def jurisdiction_tables_reference():
    """One digest over the routing tables shipped in schemas/, and each table's own."""
    combined, tables = hashlib.sha256(), {}
    for name in JURISDICTION_TABLES:
        content = resources.files("schemas").joinpath(f"{name}.csv").read_bytes()
        tables[f"{name}.csv"] = hashlib.sha256(content).hexdigest()
        combined.update(name.encode() + b"\0" + content)
    return {"sha256": combined.hexdigest(), "tables": tables}


def geoip_version(kind, path):
    """{kind, databaseType, builtAt (µs since the epoch)} from a database's MaxMind metadata."""
    found = database_provenance(path, kind)
    return {"kind": kind, "databaseType": found["database_type"], "builtAt": found["build_epoch"] * 1_000_000}


def bank_versions(path, negative):
    """One {name, negative, fileSha256, entries} per bank name in a bank file."""
    digest = sha256_of(stage(path))[:VERSION_DIGITS]
    entries = Counter(entry.bank for entry in read_bank(path))
    return [{"name": name, "negative": negative, "fileSha256": digest, "entries": count}
            for name, count in sorted(entries.items())]


def decided_with(sources):
    """The `decidedWith` value of a routed record decided with these reference files, read now."""
    return {
        "geoipDatabases": [geoip_version(kind, path) for kind, path in sources.geoip_databases()],
        "hashBanks": [version for path in sources.hash_banks for version in bank_versions(path, False)]
                     + [version for path in sources.negative_hash_banks for version in bank_versions(path, True)],
        "jurisdictionTablesSha256": jurisdiction_tables_reference()["sha256"][:VERSION_DIGITS],
        "tiplineVersion": tipline_version(),
    }
