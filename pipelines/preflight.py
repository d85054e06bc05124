"""Preflight: everything `tipline run` depends on is checked before the pipeline starts.

Every GeoIP database is opened and its declared type checked against the flag it was given to; every bank
is parsed in full (a bad row names its file and line); a local --input must match a file; the output folder
must be writable; every --media-root must be usable. What was found is the run's reference data: each
database's type and build date, each bank's names, rows and content digest, the jurisdiction tables' digest
and tipline's version. It goes into the summary, so "why did this report come to us" can be answered after
the banks change. `tipline run --check` stops here.

Paths on a remote filesystem (gs://...) are read on the workers and only named here; `file://` URIs are local paths.
"""
import collections
import os

from apache_beam.io.filesystems import FileSystems

from pipelines.errors import UsageError
from pipelines.options import DATABASE_KIND_OF_FLAG, naming_the_flag
from transforms.location.geoip import GeoIPDatabaseError, database_provenance
from transforms.matching.banks import BankFileError, read_bank
from transforms.matching.media import check_media_roots
from transforms.plumbing.reference_files import ReferenceFileError, is_remote, local_path, sha256_of, stage
from transforms.reports.reference_versions import jurisdiction_tables_reference, tipline_version


def geoip_reference(opts, open_remote=False):
    """{flag: provenance} of each GeoIP database the run reads; a database of the wrong type is a UsageError.
    A remote database is only named unless `open_remote` (then it is staged and opened as a worker would)."""
    found = {}
    for flag, path in (("--geoip-city-db", opts.resolved_city_db()), ("--geoip-asn-db", opts.geoip_asn_db),
                       ("--geoip-anonymous-db", opts.geoip_anonymous_db)):
        if path is None:
            continue
        if is_remote(path) and not open_remote:
            found[flag] = {"path": path, "checked": "on the workers"}
            continue
        try:
            found[flag] = {**database_provenance(path, DATABASE_KIND_OF_FLAG[flag]), **file_facts(path)}
        except GeoIPDatabaseError as error:
            raise naming_the_flag(error) from None
    return found


def bank_reference(path, flag, open_remote=False):
    """{path, banks, rows, rows_by_signal, bytes, sha256} of one bank file, parsed in full; a bad row or an
    unreadable file is a UsageError naming it. A remote bank is only named unless `open_remote`."""
    if is_remote(path) and not open_remote:
        return {"path": path, "checked": "on the workers"}
    try:
        entries = read_bank(path)
        facts = file_facts(path)
    except (BankFileError, ReferenceFileError, OSError) as error:
        raise UsageError(f"{flag} {error}") from None
    by_signal = collections.Counter(entry.signal.name for entry in entries)
    return {"path": path, "banks": sorted({entry.bank for entry in entries}), "rows": len(entries),
            "rows_by_signal": dict(sorted(by_signal.items())), **facts}


def file_facts(path):
    """Size and SHA-256 of a reference file's local copy (a remote file is staged first, as on a worker)."""
    local = stage(path)
    return {"bytes": os.path.getsize(local), "sha256": sha256_of(local)}


def check_input(opts):
    """`--source files`: the --input pattern must match a file (checked here only for local patterns)."""
    pattern = opts.input_pattern
    if opts.source != "files" or not pattern or is_remote(pattern):
        return
    if not FileSystems.match([local_path(pattern)])[0].metadata_list:
        raise UsageError(f"--input {pattern}: no file matches; name JSON Lines or .avro files that exist")


def check_output(output_dir):
    """The output folder, or the nearest folder it would be made in, must be a writable folder."""
    if is_remote(output_dir):
        return
    existing = os.path.abspath(local_path(output_dir))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--output {output_dir}: {existing} is a file, not a folder; name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output_dir}: {existing} is not writable; name a folder you can write")


def preflight(opts, open_remote=False):
    """Checks what the run reads and writes; returns its reference data (or raises UsageError).
    `open_remote` (`tipline check`): remote reference files are staged and opened too, as a worker would."""
    opts.check_reference_data()
    reference = {
        "tipline_version": tipline_version(),
        "demo_data": sorted(opts.demo_data_used()),
        "geoip": geoip_reference(opts, open_remote),
        "hash_banks": [bank_reference(path, "--hash-bank", open_remote) for path in opts.resolved_hash_banks()],
        "negative_hash_banks": [bank_reference(path, "--negative-hash-bank", open_remote)
                                for path in opts.resolved_negative_hash_banks()],
        "jurisdiction_tables": jurisdiction_tables_reference(),
    }
    check_input(opts)
    check_output(opts.output_dir)
    try:
        check_media_roots(opts.media_roots)
    except ValueError as error:
        raise UsageError(f"--media-root {error}") from None
    return reference


def format_reference(reference):
    """The reference-data block printed by --check, by `tipline check` and at the end of every run."""
    lines = [f"reference data (tipline {reference['tipline_version']}):"]
    for flag, db in reference["geoip"].items():
        lines.append(f"  {flag}: {db['path']}  " + (
            f"{db['database_type']}, built {db['build_date']}, {file_line(db)}" if "database_type" in db
            else db["checked"]))
    for kind, flag in (("hash_banks", "--hash-bank"), ("negative_hash_banks", "--negative-hash-bank")):
        for bank in reference[kind]:
            lines.append(f"  {flag}: {bank['path']}  " + (
                f"banks {', '.join(bank['banks']) or '-'}, {bank['rows']:,} rows{signal_counts(bank)}, {file_line(bank)}"
                if "rows" in bank else bank["checked"]))
    if not reference["hash_banks"]:
        lines.append("  --hash-bank: none (--no-hash-banks)")
    lines.append(f"  jurisdiction tables: sha256 {reference['jurisdiction_tables']['sha256'][:16]}")
    if reference["demo_data"]:
        lines.append(f"  DEMO DATA for {', '.join(reference['demo_data'])}: synthetic, not for real reports")
    return "\n".join(lines)


def file_line(facts):
    return f"{facts['bytes']:,} bytes, sha256 {facts['sha256'][:16]}"


def signal_counts(bank):
    counts = ", ".join(f"{name} {count:,}" for name, count in bank["rows_by_signal"].items())
    return f" ({counts})" if counts else ""
