"""python -m gen_worker ...: the same command line as submit.py."""
import sys

from gen_worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
