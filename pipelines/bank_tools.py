"""`tipline bank build|import` and `tipline match`: make banks and check images and videos against them.

`match` runs the pipeline's own `HashMatcher`, so what it prints is what the pipeline would route.
"""
import argparse
import csv
import json
import pathlib
import sys

from pipelines.errors import UsageError
from transforms.matching.banks import BankEntry, BankFileError, entry_from_row, write_bank
from transforms.matching.matcher import HashMatcher, VideoMatching
from transforms.matching.media import UnhashableMedia, hash_media
from transforms.matching.signals import VPdqSignal, signal_for
from transforms.matching.video import hash_video

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".3gp", ".flv", ".ts", ".mpg", ".mpeg", ".ogv",
                  ".gif", ".webp", ".png", ".apng"}


def register(subparsers):
    bank = subparsers.add_parser("bank", help="build or import hash banks")
    bank_commands = bank.add_subparsers(dest="bank_command", required=True)

    build = bank_commands.add_parser("build", help="hash every image or video in a folder into a bank")
    _add_media_folders(build)
    build.add_argument("--signal", required=True, choices=["phash", "dhash", "pdq", "md5", "vpdq"],
                       help="vpdq needs --videos: one VPDQ row per video")
    build.add_argument("--seconds-per-frame", type=float, default=1.0, help="vPDQ sampling interval (default 1)")
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

    match = subparsers.add_parser("match", help="hash images or videos and list their bank matches")
    match.add_argument("--bank", action="append", required=True)
    match.add_argument("--negative-bank", action="append", default=[])
    _add_media_folders(match)
    match.add_argument("--json", action="store_true", help="one JSON object per file (JSON Lines)")
    add_video_matching_options(match)
    match.set_defaults(func=match_images)


def _add_media_folders(parser):
    folders = parser.add_mutually_exclusive_group(required=True)
    folders.add_argument("--images", help="folder of images")
    folders.add_argument("--videos", help="folder of videos (and animated GIF/WebP/PNG)")


def add_video_matching_options(parser):
    """The vPDQ thresholds, shared by `tipline match` and `tipline run`."""
    parser.add_argument("--vpdq-query-match-percent", type=percent, default=VPdqSignal.query_match_percent,
                        help="a video matches a banked one when at least this %% of its frames are within "
                             "distance 31 of the banked video's frames (default 80)")
    parser.add_argument("--vpdq-bank-match-percent", type=percent, default=VPdqSignal.bank_match_percent,
                        help="... and they cover at least this %% of the banked video's frames "
                             "(default 0: a clip cut from a known video matches)")


def percent(text):
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage between 0 and 100")
    return value


def video_matching(args):
    return VideoMatching(args.vpdq_query_match_percent, args.vpdq_bank_match_percent,
                         getattr(args, "seconds_per_frame", 1.0))


def image_paths(folder):
    return sorted(p for p in pathlib.Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def video_paths(folder):
    return sorted(p for p in pathlib.Path(folder).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def media_paths(args):
    return video_paths(args.videos) if args.videos else image_paths(args.images)


def build_bank(args):
    signal = signal_for(args.signal)
    if signal.video and not args.videos:
        raise UsageError("--signal vpdq hashes videos: give --videos DIR")
    if args.seconds_per_frame <= 0:
        raise UsageError(f"--seconds-per-frame {args.seconds_per_frame}: must be positive")
    bank = args.bank or pathlib.Path(args.out).stem
    entries, skipped = [], 0
    for path in media_paths(args):
        try:
            value = _hash_file(path.read_bytes(), signal, args.seconds_per_frame)
        except UnhashableMedia as error:
            value = None
            print(f"skipped {path.name}: {error}", file=sys.stderr)
        if value is not None:
            entries.append(BankEntry(signal, value, bank, args.label, path.stem))
        else:
            skipped += 1
    write_bank(entries, args.out)
    kind = "videos" if args.videos else "images"
    print(f"wrote {len(entries)} {signal.name} entries to {args.out} (bank {bank}); {skipped} {kind} skipped")
    return 0


def _hash_file(data, signal, seconds_per_frame):
    """The bank value of one file for `signal`, or None when that signal yields none."""
    if signal.video:
        return VPdqSignal.to_text(hash_video(data, seconds_per_frame).features)
    return dict(hash_media(data, [signal])).get(signal)


def import_bank(args):
    bank = args.bank or pathlib.Path(args.csv).stem
    entries = [entry_from_row(row, args.csv, f"line {line}") for line, row in _list_rows(args.csv, bank, args.hash_type)]
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
    folder = args.videos or args.images
    matcher = HashMatcher.from_banks(args.bank, args.negative_bank, media_roots=[folder], video=video_matching(args))
    paths = media_paths(args)
    records = matcher.enrich_reports([{"files": [{"fileId": path.name, "contentUri": str(path)}]} for path in paths])
    for path, record in zip(paths, records):
        file = record["files"][0]
        if args.json:
            print(json.dumps({"path": str(path), "hashes": file["hashes"], "video": file["video"],
                              "matches": file["matches"], "mediaError": file["mediaError"]}))
        else:
            print(_listing(path, file))
    return 0


def _listing(path, file):
    lines = [f"{path.name}" + (f"  ({file['mediaError']})" if file["mediaError"] else "")]
    lines += [f"  {h['signalType']:<7} {h['value']}" for h in file["hashes"]]
    if file["video"]:
        lines.append(f"  VPDQ    {file['video']['frames']} frames over {file['video']['durationSeconds']:g} s")
    lines += [f"  MATCH   {m['bank']:<16} {m['label'] or '-':<16} {m['signalType']:<7} distance {m['distance']}"
              + _video_figures(m) for m in file["matches"]] or ["  no match"]
    return "\n".join(lines)


def _video_figures(match):
    if match.get("queryMatchPercent") is None:
        return ""
    segments = ", ".join(f"{s['start']:g}-{s['end']:g} s" for s in match["segments"])
    return (f"  query {match['queryMatchPercent']:g}%  bank {match['bankMatchPercent']:g}%"
            f"  segments {segments}")

