"""Length-prefixed records in one bytearray (the local bundle sessions' sightings)."""
import random

from transforms.plumbing.packed_buckets import append_record, iter_records


def test_records_of_every_length_come_back_in_order():
    rng = random.Random(3)
    records = [b"", b"\x00", rng.randbytes(0xFFFE), rng.randbytes(0xFFFF), rng.randbytes(70_000),
               *(rng.randbytes(rng.randint(0, 300)) for _ in range(200))]
    rng.shuffle(records)
    held = bytearray()
    for record in records:
        append_record(held, record)
    assert list(iter_records(held)) == records
    assert len(held) == sum(len(record) + (2 if len(record) < 0xFFFF else 6) for record in records)


def test_no_records_in_an_empty_bytearray():
    assert list(iter_records(bytearray())) == []
