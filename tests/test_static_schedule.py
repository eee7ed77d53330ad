import pytest

from gen_worker.schedule.static import worker_blocks, worker_indices


@pytest.mark.parametrize("n", [0, 1, 7, 30])
@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("block", [1, 4])
def test_every_sample_exactly_once(n, workers, block):
    seen = [i for k in range(workers) for b in worker_blocks(n, k, workers, block) for i in b]
    assert sorted(seen) == list(range(n))


def test_round_robin_order():
    assert worker_blocks(7, 1, 3) == [[1], [4]]
    assert worker_indices(10, 1, 2, block_size=3) == [3, 4, 5, 9]
    assert worker_blocks(10, 0, 2, block_size=3) == [[0, 1, 2], [6, 7, 8]]
    assert worker_blocks(10, 1, 2, block_size=3) == [[3, 4, 5], [9]]
    with pytest.raises(ValueError):
        worker_blocks(3, 2, 2)
