"""contentUri is read only inside the configured media roots, as a regular file, with a read timeout.

Real files, symlinks, a real FIFO and a real Beam filesystem: `memquarantine://` is a small in-memory
Beam FileSystem registered here, a stand-in for GCS (which cannot run on this machine) that records what
it was asked to open.
"""
import base64
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import threading
import urllib.parse

import fastavro
import pytest
from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem, MatchResult

from tests.conftest import REPO, example_report
from transforms.demo.synthetic_images import encode_jpeg, make_image
from transforms.matching import media
from transforms.matching.matcher import HashMatcher
from transforms.matching.media import MediaRoots, UnhashableMedia, check_media_roots, media_bytes
from transforms.demo.packaged import packaged

OUTSIDE = "media URI is outside the media roots (--media-root)"


class MemoryQuarantine(FileSystem):
    """A Beam filesystem over a dict (stand-in for a gs:// quarantine bucket); `opened` lists every open."""

    objects = {}
    opened = []

    @classmethod
    def scheme(cls):
        return "memquarantine"

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        MemoryQuarantine.opened.append(path)
        if path not in self.objects:
            raise BeamIOError("no such object", {path: FileNotFoundError(path)})
        return io.BytesIO(self.objects[path])

    def match(self, patterns, limits=None):
        return [MatchResult(p, [FileMetadata(p, len(self.objects[p]))] if p in self.objects else [])
                for p in patterns]

    def join(self, base, *parts):
        return "/".join([base.rstrip("/"), *parts])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def exists(self, path):
        return path in self.objects

    mkdirs = has_dirs = create = copy = rename = delete = size = last_updated = checksum = None
    _list = metadata = None


@pytest.fixture
def quarantine(tmp_path):
    root = tmp_path / "quarantine"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    image = encode_jpeg(make_image(4), 85)
    (root / "in root.jpg").write_bytes(image)
    return root, image


def refusal(file, roots):
    with pytest.raises(UnhashableMedia) as caught:
        media_bytes(file, roots)
    return str(caught.value)


def test_a_file_inside_a_root_is_read_as_a_path_or_a_file_uri(quarantine):
    root, image = quarantine
    path = str(root / "in root.jpg")
    assert media_bytes({"contentUri": path}, [str(root)]) == image
    assert media_bytes({"contentUri": pathlib.Path(path).as_uri()}, [str(root)]) == image  # file:///...%20...
    assert media_bytes({"contentUri": "file://localhost" + urllib.parse.quote(path)}, [root.as_uri()]) == image


def test_files_outside_the_roots_are_never_read(quarantine):
    root, _ = quarantine
    roots = [str(root)]
    for outside in ("/etc/hostname", "/proc/self/environ", "file:///etc/hostname", "/etc/shadow"):
        assert refusal({"contentUri": outside}, roots) == OUTSIDE
    assert refusal({"contentUri": str(root) + "-sibling/x.jpg"}, roots) == OUTSIDE  # a prefix is not a folder
    for dotted in (f"{root}/../../../../etc/hostname", "../../../../etc/hostname", "file://host/etc/hostname"):
        assert refusal({"contentUri": dotted}, roots) in (
            "media URI has a '..' segment", "media URI is not an absolute path", "media URI names a host other than localhost")


def test_symlinks_may_stay_inside_but_not_lead_out(quarantine):
    root, image = quarantine
    (root / "out.jpg").symlink_to("/etc/hostname")
    (root / "alias.jpg").symlink_to(root / "in root.jpg")
    (root / "sub").symlink_to("/etc")
    assert refusal({"contentUri": str(root / "out.jpg")}, [str(root)]) == OUTSIDE
    assert refusal({"contentUri": str(root / "sub" / "hostname")}, [str(root)]) == OUTSIDE
    assert media_bytes({"contentUri": str(root / "alias.jpg")}, [str(root)]) == image


def test_a_fifo_or_a_folder_is_refused_without_waiting_for_a_writer(quarantine):
    root, _ = quarantine
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(refusal({"contentUri": str(fifo)}, [str(root)])),
                              daemon=True)
    reader.start()
    reader.join(120)  # generous: it returns at once; before, opening a FIFO with no writer blocked for ever
    assert outcome == ["media URI is not a regular file"]
    (root / "folder.jpg").mkdir()
    assert refusal({"contentUri": str(root / "folder.jpg")}, [str(root)]) == "media URI is not a regular file"


def test_without_a_root_no_uri_is_read_and_inline_content_still_is(quarantine):
    root, image = quarantine
    assert refusal({"contentUri": str(root / "in root.jpg")}, []) == \
        "media URI not read: no --media-root is configured"
    assert media_bytes({"content": base64.b64encode(image).decode()}, []) == image


def test_a_hung_read_times_out(quarantine):
    release = threading.Event()
    with pytest.raises(UnhashableMedia, match=r"media read timed out after 0.2 s"):
        media._with_timeout(release.wait, 0.2)
    release.set()


def test_beam_filesystem_prefixes_bound_remote_uris_and_others_are_never_opened():
    MemoryQuarantine.objects = {"memquarantine://store/in/a.jpg": b"bytes", "memquarantine://store/out/b.jpg": b"x"}
    MemoryQuarantine.opened = []
    roots = MediaRoots(["memquarantine://store/in"])
    assert media_bytes({"contentUri": "memquarantine://store/in/a.jpg"}, roots) == b"bytes"
    assert refusal({"contentUri": "memquarantine://store/out/b.jpg"}, roots) == OUTSIDE
    assert refusal({"contentUri": "memquarantine://store/in-other/b.jpg"}, roots) == OUTSIDE
    assert refusal({"contentUri": "memquarantine://store/in/../out/b.jpg"}, roots) == "media URI has a '..' segment"
    assert refusal({"contentUri": "gs://someone-elses-bucket/secret.jpg"}, roots) == OUTSIDE
    assert refusal({"contentUri": "memquarantine://store/in/gone.jpg"}, roots) == "media not readable (BeamIOError)"
    assert MemoryQuarantine.opened == ["memquarantine://store/in/a.jpg", "memquarantine://store/in/gone.jpg"]


def test_root_checks_name_the_root(tmp_path):
    """The root and what is wrong with it; `tipline run` adds the flag (test_media_roots below, misconfiguration)."""
    check_media_roots([str(tmp_path), tmp_path.as_uri(), "gs://bucket/quarantine"])
    for bad, reason in ((str(tmp_path / "missing"), "not a folder"), ("/", "filesystem root"),
                        ("gs://", "names no bucket"), ("file://host/x", "not a local file:// URI")):
        with pytest.raises(ValueError, match=f"^{bad}: .*{reason}"):
            check_media_roots([bad])


def test_matcher_hashes_only_what_is_inside_the_roots(quarantine):
    root, _ = quarantine
    matcher = HashMatcher.from_banks([packaged("demo-bank.csv")], media_roots=[str(root)])
    report = example_report()
    template = {**report["files"][0], "content": None, "originalFileHashes": None}
    report["files"] = [{**template, "fileId": "inside", "contentUri": str(root / "in root.jpg")},
                       {**template, "fileId": "shadow", "contentUri": "/etc/hostname"}]
    inside, shadow = matcher.enrich_report(report)["files"]
    assert inside["mediaStatus"] == "hashed" and {"MD5", "SHA1", "PHASH"} <= {h["signalType"] for h in inside["hashes"]}
    assert shadow == {"fileId": "shadow", "mediaStatus": "unhashable", "mediaError": OUTSIDE, "hashes": [],
                      "video": None, "matches": [], "benignMatch": None}


def test_a_run_hashes_media_from_its_root_and_refuses_the_rest(quarantine, tmp_path):
    """The whole pipeline on the files source: the FIFO does not hang it, nothing outside is hashed."""
    root, image = quarantine
    os.mkfifo(root / "pipe.jpg")
    uris = {"inside": (root / "in root.jpg").as_uri(), "etc": "/etc/hostname", "environ": "/proc/self/environ",
            "dotdot": f"{root}/../../../../etc/hostname", "fifo": str(root / "pipe.jpg")}
    lines = []
    for name, uri in uris.items():
        report = example_report()
        report["reportId"] = f"media-{name}"
        report["files"] = [{**report["files"][0], "fileId": name, "content": None, "contentUri": uri,
                            "originalFileHashes": None}]
        lines.append(json.dumps(report))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "pipelines.tipline_pipeline", "--source", "files",
                    "--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--media-root", str(root),
                    "--demo-data"],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    files = {}
    for path in out.glob("routed/jurisdiction=*/*.avro"):
        with open(path, "rb") as handle:
            for record in fastavro.reader(handle):
                files.update({file["fileId"]: file for file in record["files"]})
    assert files["inside"]["mediaStatus"] == "hashed"
    assert {name: (files[name]["mediaStatus"], files[name]["mediaError"], files[name]["hashes"])
            for name in ("etc", "environ", "dotdot", "fifo")} == {
        "etc": ("unhashable", OUTSIDE, []), "environ": ("unhashable", OUTSIDE, []),
        "dotdot": ("unhashable", "media URI has a '..' segment", []),
        "fifo": ("unhashable", "media URI is not a regular file", [])}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == summary["routed"] == 5


def test_a_missing_media_root_stops_the_start_with_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipelines.tipline_pipeline", "--output", str(tmp_path / "out"),
                           "--media-root", str(tmp_path / "nowhere")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == f"tipline run: error: --media-root {tmp_path / 'nowhere'}: not a folder"


def test_explain_reads_media_from_its_roots_only(quarantine, tmp_path):
    root, image = quarantine
    bank = tmp_path / "bank.csv"
    bank.write_text(f"hash_type,hash_value,bank,label,external_id\nMD5,{hashlib.md5(image).hexdigest()},quarantine,,\n")
    report = example_report()
    report["files"] = [{**report["files"][0], "content": None, "contentUri": str(root / "in root.jpg"),
                        "originalFileHashes": None}]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    explain = [sys.executable, "-m", "pipelines.cli", "explain", str(path), "--hash-bank", str(bank), "--media-root"]
    summaries = [json.loads(subprocess.run(explain + [str(where)], cwd=REPO, capture_output=True, text=True,
                                           timeout=300, check=True).stdout)["matchSummary"]
                 for where in (root, root.parent / "elsewhere")]
    assert summaries == ["known", "new"]
    missing = subprocess.run(explain + [str(tmp_path / "nowhere")], cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert (missing.returncode, missing.stderr.strip()) == (
        2, f"tipline explain: error: --media-root {tmp_path / 'nowhere'}: not a folder")
