"""Bank files: both formats, several banks, exact and perceptual lookups, clear errors."""
import random

import pytest

from transforms.matching import banks as banks_module
from transforms.matching import code_search
from transforms.matching.banks import BankEntry, BankFileError, BankIndexes, bank_fingerprint, read_bank, write_bank
from transforms.matching.signals import Md5Signal, PdqSignal, PHashSignal

ENTRIES = [BankEntry(PHashSignal, "ffffffff00000000", "bank-a", "series", "e1"),
           BankEntry(Md5Signal, "d41d8cd98f00b204e9800998ecf8427e", "bank-a", None, None),
           BankEntry(PdqSignal, "f" * 64, "bank-b", "pdq-label", None)]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip(tmp_path, suffix):
    path = str(tmp_path / f"bank.{suffix}")
    write_bank(ENTRIES, path)
    assert read_bank(path) == ENTRIES


def test_csv_without_external_id_column_and_mixed_case(tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text("hash_type,hash_value,bank,label\nsha-1,A9993E364706816ABA3E25717850C26C9CD0D89D,b,\n")
    [entry] = read_bank(str(path))
    assert (entry.signal.name, entry.value, entry.label, entry.external_id) == (
        "SHA1", "a9993e364706816aba3e25717850c26c9cd0d89d", None, None)


@pytest.mark.parametrize("body,where", [
    ("PHASH,zz,b,,\n", "line 3: invalid PHASH hash"), ("NOPE,ab,b,,\n", "line 3: unknown hash type 'NOPE'"),
    ("PHASH,ffffffff00000000,,,\n", "line 3: empty bank name")])
def test_bad_rows_name_file_and_line(tmp_path, body, where):
    path = tmp_path / "bank.csv"
    path.write_text("hash_type,hash_value,bank,label,external_id\nMD5," + "0" * 32 + ",b,,\n" + body)
    with pytest.raises(BankFileError, match=f"{path} {where}"):
        read_bank(str(path))


def test_wrong_columns(tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text("type,value\nMD5,00\n")
    with pytest.raises(BankFileError, match="expected columns"):
        read_bank(str(path))


def test_indexes_search_exact_and_within_threshold():
    banks = BankIndexes(ENTRIES + [BankEntry(PHashSignal, "ffffffff000000ff", "bank-c", None, None)])
    near, far = banks.search(PHashSignal, ["ffffffff00000001", "00000000ffffffff"])
    assert sorted((entry.bank, distance) for entry, distance in near) == [("bank-a", 1), ("bank-c", 7)]
    assert far == []
    assert [e.bank for e, _ in banks.search(Md5Signal, ["d41d8cd98f00b204e9800998ecf8427e"])[0]] == ["bank-a"]
    assert banks.search(PdqSignal, ["f" * 56 + "0" * 8])[0] == []  # 32 bits away: beyond 31
    assert banks.search(PdqSignal, ["f" * 56 + "8" + "0" * 7])[0][0][1] == 31


def test_fingerprint_changes_when_a_bank_is_rewritten(tmp_path):
    path = str(tmp_path / "bank.csv")
    write_bank(ENTRIES[:1], path)
    before = bank_fingerprint([path])
    write_bank(ENTRIES, path)
    assert bank_fingerprint([path]) != before


@pytest.mark.parametrize("signal", [PHashSignal, PdqSignal])
def test_small_bank_scan_finds_what_the_hamming_index_finds_in_the_same_order(monkeypatch, signal):
    """Banks up to their SCAN_CODES are scanned, larger ones go through the Hamming index; both give each query's
    hits in bank order, so a bank growing past the limit changes no record (ties included: duplicates)."""
    rng = random.Random(7)
    bits = signal.bits
    queries = [rng.getrandbits(bits) for _ in range(40)]
    codes = [query ^ sum(1 << bit for bit in rng.sample(range(bits), rng.randrange(signal.default_threshold + 4)))
             for query in queries for _ in range(3)] + [rng.getrandbits(bits) for _ in range(200)]
    codes += codes[:30]  # the same hash banked twice
    rng.shuffle(codes)
    entries = [BankEntry(signal, f"{code:0{bits // 4}x}", f"bank-{n % 3}", None, str(n)) for n, code in enumerate(codes)]
    hexes = [f"{query:0{bits // 4}x}" for query in queries]
    monkeypatch.setattr(code_search, "SCAN_CODES", {64: len(codes), 256: len(codes)})
    scanning = banks_module.SignalIndex(signal, entries)
    assert isinstance(scanning._near, code_search.ScannedCodes)
    scanned = scanning.search(hexes)
    monkeypatch.setattr(code_search, "SCAN_CODES", {64: len(codes) - 1, 256: len(codes) - 1})
    indexed = banks_module.SignalIndex(signal, entries)
    assert not isinstance(indexed._near, code_search.ScannedCodes)
    assert indexed.search(hexes) == scanned
    assert sum(map(len, scanned)) > 100  # most planted neighbours are within the threshold
    assert any(len({distance for _, distance in hits}) < len(hits) for hits in scanned)  # ties to order
    expected = [[(entry, (query ^ int(entry.value, 16)).bit_count()) for entry in entries
                 if (query ^ int(entry.value, 16)).bit_count() <= signal.default_threshold] for query in queries]
    assert scanned == expected


@pytest.mark.parametrize("bits", [64, 256])
def test_codes_are_scanned_up_to_their_widths_limit_and_indexed_past_it(bits):
    rng = random.Random(3)
    limit = code_search.SCAN_CODES[bits]
    codes = code_search.codes_from_hex([f"{rng.getrandbits(bits):0{bits // 4}x}" for _ in range(limit + 1)], bits)
    assert isinstance(code_search.range_search(codes[:limit], 8), code_search.ScannedCodes)
    assert not isinstance(code_search.range_search(codes, 8), code_search.ScannedCodes)
    assert code_search.SCAN_CODES[256] < code_search.SCAN_CODES[64]  # a 256-bit scan costs ~7x a 64-bit one
