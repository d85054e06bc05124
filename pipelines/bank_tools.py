"""`tipline bank build|import` and `tipline match`: make banks and check images against them.

`match` runs the pipeline's own `HashMatcher`, so what it prints is what the pipeline would route.
"""
import argparse
import csv
import json
import pathlib
import sys

from transforms.matching.banks import BankEntry, BankFileError, entry_from_row, write_bank
from transforms.matching.matcher import HashMatcher
from transforms.matching.media import UnhashableMedia, hash_media
from transforms.matching.signals import signal_for

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def register(subparsers):
    bank = subparsers.add_parser("bank", help="build or import hash banks")
    bank_commands = bank.add_subparsers(dest="bank_command", required=True)

    build = bank_commands.add_parser("build", help="hash every image in a folder into a bank")
    build.add_argument("--images", required=True, help="folder of images")
    build.add_argument("--signal", required=True, choices=["phash", "dhash", "pdq", "md5"])
    build.add_argument("--out", required=True, help="BANK.parquet or BANK.csv")
    build.add_argument("--label", default=None)
    build.add_argument("--bank", default=None, help="bank name (default: the output file's stem)")
    build.set_defaults(func=build_bank)

    imported = bank_commands.add_parser("import", help="turn a CSV hash list into a bank")
    imported.add_argument("--csv", required=True, help="a list with one hash column, or the full bank columns")
    imported.add_argument("--out", required=True, help="BANK.parquet or BANK.csv")
    imported.add_argument("--bank", default=None, help="bank name for rows without one (default: file stem)")
    imported.add_argument("--hash-type", default=None, help="hash type for a one-column list, e.g. MD5")
    imported.set_defaults(func=import_bank)

    match = subparsers.add_parser("match", help="hash images and list their bank matches")
    match.add_argument("--bank", action="append", required=True)
    match.add_argument("--negative-bank", action="append", default=[])
    match.add_argument("--images", required=True, help="folder of images")
    match.add_argument("--json", action="store_true", help="one JSON object per image (JSON Lines)")
    match.set_defaults(func=match_images)


def image_paths(folder):
    return sorted(p for p in pathlib.Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def build_bank(args):
    signal = signal_for(args.signal)
    bank = args.bank or pathlib.Path(args.out).stem
    entries, skipped = [], 0
    for path in image_paths(args.images):
        try:
            hashes = dict(hash_media(path.read_bytes(), [signal]))
        except UnhashableMedia as error:
            hashes = {}
            print(f"skipped {path.name}: {error}", file=sys.stderr)
        if signal in hashes:
            entries.append(BankEntry(signal, hashes[signal], bank, args.label, path.stem))
        else:
            skipped += 1
    write_bank(entries, args.out)
    print(f"wrote {len(entries)} {signal.name} entries to {args.out} (bank {bank}); {skipped} images skipped")
    return 0


def import_bank(args):
    bank = args.bank or pathlib.Path(args.csv).stem
    try:
        entries = [entry_from_row(row, args.csv, f"line {line}") for line, row in _list_rows(args.csv, bank, args.hash_type)]
    except BankFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_bank(entries, args.out)
    print(f"wrote {len(entries)} entries to {args.out}")
    return 0


def _list_rows(path, bank, hash_type):
    """(line number, bank row) from a list with the bank columns or with just a hash column."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = [name.strip().lower() for name in rows[0]] if rows else []
    if set(header) >= {"hash_type", "hash_value"}:
        numbered = [(line, dict(zip(header, row))) for line, row in enumerate(rows[1:], start=2)]
    else:
        if not hash_type:
            raise BankFileError(f"{path}: a one-column hash list needs --hash-type")
        first = 1 if header and not _looks_like_hash(header[0]) else 0
        numbered = [(line, {"hash_type": hash_type, "hash_value": row[0] if row else ""})
                    for line, row in enumerate(rows[first:], start=first + 1)]
    return [(line, {**row, "bank": (row.get("bank") or "").strip() or bank}) for line, row in numbered]


def _looks_like_hash(text):
    return all(c in "0123456789abcdefABCDEF" for c in text.strip()) and len(text.strip()) >= 16


def match_images(args):
    matcher = HashMatcher.from_banks(args.bank, args.negative_bank, media_roots=[args.images])
    paths = image_paths(args.images)
    records = matcher.enrich_reports([{"files": [{"fileId": path.name, "contentUri": str(path)}]} for path in paths])
    for path, record in zip(paths, records):
        file = record["files"][0]
        if args.json:
            print(json.dumps({"path": str(path), "hashes": file["hashes"], "matches": file["matches"],
                              "mediaError": file["mediaError"]}))
        else:
            print(_listing(path, file))
    return 0


def _listing(path, file):
    lines = [f"{path.name}" + (f"  ({file['mediaError']})" if file["mediaError"] else "")]
    lines += [f"  {h['signalType']:<7} {h['value']}" for h in file["hashes"]]
    lines += [f"  MATCH   {m['bank']:<16} {m['label'] or '-':<16} {m['signalType']:<7} distance {m['distance']}"
              for m in file["matches"]] or ["  no match"]
    return "\n".join(lines)


def main(argv=None):
    """`python -m pipelines.bank_tools ...` until the `tipline` command wires these in."""
    parser = argparse.ArgumentParser(prog="tipline")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
