"""RowLog: rising rows kept as varint gaps come back as they went in, moved on by a merge, through a pickle."""
import pickle
import random

import numpy as np
import pytest

from transforms.plumbing.row_log import RowLog, varint_values

GAPS_AT_EVERY_WIDTH = [1, 127, 128, 16_383, 16_384, 2**21 - 1, 2**21, 2**28, 2**35]


def logged(rows):
    log = RowLog()
    for row in rows:
        log.append(row)
    return log


def test_rows_come_back_across_every_varint_width():
    rows = np.cumsum(GAPS_AT_EVERY_WIDTH) - 1
    log = logged(rows.tolist())
    assert log.rows().tolist() == rows.tolist()
    assert len(log) == len(rows) and len(RowLog()) == 0
    assert len(log.gaps) == sum(max(1, -(-gap.bit_length() // 7)) for gap in GAPS_AT_EVERY_WIDTH)


def test_varints_decode_as_python_reads_them():
    rng = random.Random(5)
    values = [rng.choice([rng.randint(1, 127), rng.randint(128, 2**14), rng.randint(2**14, 2**40)])
              for _ in range(500)]
    packed = bytearray()
    for value in values:
        while value > 0x7F:
            packed.append(value & 0x7F | 0x80)
            value >>= 7
        packed.append(value)
    assert varint_values(packed).tolist() == [int(v) for v in values]


def test_a_merge_moves_the_other_rows_past_its_own():
    rng = random.Random(7)
    for _ in range(200):
        own = sorted(rng.sample(range(rng.choice([10, 500, 100_000])), rng.randint(0, 8)))
        other = sorted(rng.sample(range(rng.choice([10, 500, 100_000])), rng.randint(0, 8)))
        offset = (own[-1] + 1 if own else 0) + rng.randint(0, 20_000)
        log = logged(own)
        log.extend_moved(logged(other), offset)
        assert log.rows().tolist() == own + [row + offset for row in other]
        assert len(log) == len(own) + len(other)
        log.append(log.last + 1)  # the merged log goes on from the other's last row, moved
        assert log.rows().tolist()[-1] == (other[-1] + offset if other else own[-1] if own else -1) + 1


def test_a_row_that_does_not_rise_is_refused():
    log = logged([3, 9])
    with pytest.raises(ValueError, match="does not rise"):
        log.append(9)
    assert log.rows().tolist() == [3, 9]


def test_a_log_survives_a_pickle():
    log = logged([0, 1, 300, 70_000])
    assert pickle.loads(pickle.dumps(log)).rows().tolist() == [0, 1, 300, 70_000]
