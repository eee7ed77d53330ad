"""Which samples a worker makes: round-robin over blocks of consecutive samples.

Worker k of N takes blocks k, k+N, k+2N, ... A block is `block_size` consecutive samples and is
generated as one pipeline call, so at a given block size every image is the same whatever N is.
With block_size 1 this is the plain sample round-robin k, k+N, k+2N, ...
"""


def worker_blocks(num_samples: int, worker_index: int, num_workers: int, block_size: int = 1) -> list[list[int]]:
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker index {worker_index} is not in 0..{num_workers - 1}")
    stride = num_workers * block_size
    return [list(range(start, min(start + block_size, num_samples)))
            for start in range(worker_index * block_size, num_samples, stride)]


def worker_indices(num_samples: int, worker_index: int, num_workers: int, block_size: int = 1) -> list[int]:
    """Every sample index of one worker, in the order it makes them."""
    return [i for block in worker_blocks(num_samples, worker_index, num_workers, block_size) for i in block]
