"""The cube contract's tiling rules (cube/tiling.py) against hand-worked cases: dateline columns,
odd windows, the unwrapped east edge and the block order."""

from __future__ import annotations

import numpy as np
import pytest

from cube.tiling import (block_order, column_runs, odd_window, tile_column_selector, tile_columns, unwrapped_east,
                         window_days_slice, window_radius)


def test_tile_columns_wrap_across_the_dateline():
    assert tile_columns(2, 4, 10).tolist() == [2, 3, 4, 5]
    assert tile_columns(8, 4, 10).tolist() == [8, 9, 0, 1]


def test_tile_column_selector_is_a_slice_unless_the_tile_wraps():
    assert tile_column_selector(2, 4, 10) == slice(2, 6)
    assert tile_column_selector(6, 4, 10) == slice(6, 10)  # ends exactly on the last column
    wrapped = tile_column_selector(8, 4, 10)
    assert isinstance(wrapped, np.ndarray) and wrapped.tolist() == [8, 9, 0, 1]


def test_column_runs():
    assert column_runs(np.array([8, 9, 0, 1])) == [slice(8, 10), slice(0, 2)]
    assert column_runs(np.array([3, 4, 5])) == [slice(3, 6)]


def test_unwrapped_east_edge():
    assert unwrapped_east(170.0, -177.2) == pytest.approx(182.8)   # crosses the dateline
    assert unwrapped_east(-10.0, 2.8) == pytest.approx(2.8)
    assert unwrapped_east(-180.0, 180.0) == pytest.approx(180.0)   # a whole-globe tile from the dateline
    assert unwrapped_east(-179.95, -179.95) == pytest.approx(180.05)  # a whole-globe tile elsewhere
    lon1 = unwrapped_east(np.array([170.0, 0.0]), np.array([-177.2, 12.8]))
    assert lon1 == pytest.approx([182.8, 12.8])


@pytest.mark.parametrize("days,odd,radius", [(1, 1, 0), (2, 3, 1), (3, 3, 1), (4, 5, 2), (7, 7, 3), (10, 11, 5)])
def test_odd_window(days, odd, radius):
    assert odd_window(days) == odd and window_radius(days) == radius


def test_window_days_slice():
    assert window_days_slice(5, 3) == slice(4, 7)
    assert window_days_slice(5, 4) == slice(3, 8)   # 4 days -> 5, centred
    assert window_days_slice(0, 1) == slice(0, 1)


class _Reversing:
    """A stand-in generator whose permutation reverses, so the expected order can be written by hand."""

    def permutation(self, n):
        return np.arange(n)[::-1]


def test_block_order_by_hand():
    # n = 7, blocks of 3: [0 1 2] [3 4 5] [6]
    assert block_order(7, 3, _Reversing()).tolist() == [6, 3, 4, 5, 0, 1, 2]
    assert block_order(7, 3, _Reversing(), short_last_stays_last=True).tolist() == [3, 4, 5, 0, 1, 2, 6]
    assert block_order(6, 3, _Reversing(), short_last_stays_last=True).tolist() == [3, 4, 5, 0, 1, 2]
    assert block_order(7, 3, None).tolist() == list(range(7))
    assert block_order(7, None, _Reversing()).tolist() == list(range(7))
    assert block_order(0, 3, _Reversing()).tolist() == []


def test_block_order_keeps_blocks_whole_with_a_real_generator():
    order = block_order(23, 4, np.random.default_rng(5))
    assert sorted(order.tolist()) == list(range(23))
    position = np.argsort(order)
    for start in range(0, 23, 4):  # each block [4k, 4k + 3] (the last one [20, 22]) stands together, in order
        block = np.arange(start, min(start + 4, 23))
        assert (np.diff(position[block]) == 1).all()
    assert order.tolist() != list(range(23))  # and the blocks were moved
