"""Run one worker: python -m gen_worker.worker --spec SPEC.json [--spec ...] --worker_index K --num_workers N

Started by submit.py (one process per GPU, with CUDA_VISIBLE_DEVICES set to that GPU); rarely
run by hand. Several specs (the configurations of a sweep) are made one after the other, each
model loaded once. Exit status: 0 when the worker went through all its samples (some may have
failed: see failed_prompts_gpu{k}.txt), 1 when it could not run, 130 when stopped by a signal.
"""
import argparse
import logging
import signal
import sys
from types import FrameType
from typing import NoReturn, Sequence

from gen_worker.errors import T2IError
from gen_worker.spec import JobSpec

log = logging.getLogger("gen_worker.worker")


def _stop_once(signum: int, frame: FrameType | None) -> NoReturn:
    """First SIGINT/SIGTERM unwinds like Ctrl+C; later ones are ignored so the clean-up can finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, action="append", help="JSON file written by submit.py (repeatable)")
    parser.add_argument("--worker_index", type=int, required=True)
    parser.add_argument("--num_workers", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    # Ctrl+C, the submitter's SIGTERM, scancel or preemption unwind the worker, so the image
    # being written is cleaned up instead of left behind (Ctrl+C may arrive twice: terminal + submitter).
    signal.signal(signal.SIGINT, _stop_once)
    signal.signal(signal.SIGTERM, _stop_once)
    from gen_worker.worker.loop import run_specs
    try:
        specs = []
        for path in args.spec:
            with open(path, encoding="utf-8") as f:
                specs.append(JobSpec.from_json(f.read()))
        run_specs(specs, args.worker_index, args.num_workers)
    except KeyboardInterrupt:
        return 130
    except T2IError as err:  # e.g. a spec from other code: one line says what to do
        log.error("%s", err)
        return 1
    except Exception:
        return 1  # already logged with its traceback, and in the worker's summary
    return 0


if __name__ == "__main__":
    sys.exit(main())
