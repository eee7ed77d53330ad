#!/usr/bin/env python3
"""Generate images for a CSV of prompts on local GPUs or on SLURM. See README.md or --help."""
import sys

from gen_worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
