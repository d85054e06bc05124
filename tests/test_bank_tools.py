"""`tipline bank build|import` and `tipline match`, run in-process through the `tipline` command."""
import json
import random

import pytest

from pipelines.cli import main
from transforms.matching.banks import read_bank
from transforms.demo.synthetic_images import encode_jpeg, make_image, variant


def run(*argv):
    return main(list(argv))


@pytest.fixture
def folders(tmp_path):
    known, queries = tmp_path / "known", tmp_path / "queries"
    known.mkdir(), queries.mkdir()
    for seed in (11, 12):
        (known / f"k{seed}.jpg").write_bytes(encode_jpeg(make_image(seed), 90))
    (queries / "a-variant.jpg").write_bytes(variant(make_image(11), "crop", random.Random(1)))
    (queries / "b-unrelated.jpg").write_bytes(encode_jpeg(make_image(99), 90))
    (queries / "c-broken.jpg").write_bytes(b"not an image")
    return known, queries


def test_build_then_match_json(folders, tmp_path, capsys):
    known, queries = folders
    bank = str(tmp_path / "bank.parquet")
    assert run("bank", "build", "--images", str(known), "--signal", "phash", "--out", bank, "--label", "demo") == 0
    entries = read_bank(bank)
    assert [(e.signal.name, e.bank, e.label, e.external_id) for e in entries] == [
        ("PHASH", "bank", "demo", "k11"), ("PHASH", "bank", "demo", "k12")]
    capsys.readouterr()
    assert run("match", "--bank", bank, "--images", str(queries), "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"].rsplit("/", 1)[1] for line in lines] == ["a-variant.jpg", "b-unrelated.jpg", "c-broken.jpg"]
    assert [(m["bank"], m["label"], m["signalType"]) for m in lines[0]["matches"]] == [("bank", "demo", "PHASH")]
    assert lines[1]["matches"] == [] and lines[2]["matches"] == []
    assert {h["signalType"] for h in lines[0]["hashes"]} >= {"MD5", "SHA1", "PHASH"}


def test_match_listing_and_negative_bank(folders, tmp_path, capsys):
    known, queries = folders
    bank, negative = str(tmp_path / "bank.csv"), str(tmp_path / "negative.csv")
    run("bank", "build", "--images", str(known), "--signal", "phash", "--out", bank, "--bank", "csam-demo")
    capsys.readouterr()
    assert run("match", "--bank", bank, "--images", str(queries)) == 0
    listing = capsys.readouterr().out
    assert "MATCH   csam-demo" in listing and "no match" in listing
    run("bank", "build", "--images", str(known), "--signal", "phash", "--out", negative)
    capsys.readouterr()
    run("match", "--bank", bank, "--negative-bank", negative, "--images", str(queries))
    assert "MATCH" not in capsys.readouterr().out


def test_import_hash_lists(tmp_path, capsys):
    one_column = tmp_path / "list.csv"
    one_column.write_text("md5\n" + "a" * 32 + "\n" + "B" * 32 + "\n")
    out = str(tmp_path / "imported.parquet")
    assert run("bank", "import", "--csv", str(one_column), "--out", out, "--hash-type", "MD5", "--bank", "ext") == 0
    assert [(e.signal.name, e.value, e.bank) for e in read_bank(out)] == [("MD5", "a" * 32, "ext"), ("MD5", "b" * 32, "ext")]
    full = tmp_path / "full.csv"
    full.write_text("hash_type,hash_value,bank,label,external_id\nPDQ," + "f" * 64 + ",pdq-bank,l1,x1\nsha-1,zz,b,,\n")
    assert run("bank", "import", "--csv", str(full), "--out", out) == 2
    assert f"{full} line 3: invalid SHA1 hash" in capsys.readouterr().err
