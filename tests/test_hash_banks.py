"""Bank files: both formats, several banks, exact and perceptual lookups, clear errors."""
import pytest

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
