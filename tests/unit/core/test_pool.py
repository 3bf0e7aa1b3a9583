import multiprocessing
import os
import time

import pytest

from ich.core.pool import TaskFailure, map_chunks_in_order


def _square_or_fail(item: int) -> int:
    if item == 6:
        os._exit(5)  # kills its worker, and so its whole chunk
    if item == 13:
        time.sleep(600)  # hangs past the time limit
    return item * item


def test_a_chunk_that_dies_or_hangs_costs_only_the_item_at_fault():
    results = list(map_chunks_in_order(_square_or_fail, range(20), chunk_size=4, workers=2, timeout_s=1.0))
    failures = {result.item: result.reason for result in results if isinstance(result, TaskFailure)}
    assert failures == {
        6: "the worker process died while processing this file (exit code 5)",
        13: "timed out after 1 s (its worker process was stopped)",
    }
    # Every other item's result, in input order, its chunk's neighbours of 6 and 13 included.
    assert [result for result in results if not isinstance(result, TaskFailure)] == [
        item * item for item in range(20) if item not in (6, 13)
    ]
    assert [getattr(result, "item", None) for result in results][6] == 6
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("in_process", [True, False])
def test_chunks_of_any_size_give_one_result_per_item_in_order(in_process):
    items = list(range(11))  # 11 = two chunks of 5 and one of 1
    results = list(map_chunks_in_order(abs, (-item for item in items), chunk_size=5, workers=2, in_process=in_process))
    assert results == items


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size"):
        list(map_chunks_in_order(abs, [1], chunk_size=0))
