"""submit.py's job settings from environment variables named after them, for run_full_evaluation.sh.

    python -m gen_worker.env_settings    # prints the flags, each argument followed by a NUL byte

Each flag of JobSpec (spec.py) but those of input and output, given as its name in upper case:
GUIDANCE_SCALE=3 -> --guidance_scale 3, COMPILE=yes -> --compile, COMPILE=regional -> --compile regional. Input and output (MODEL_PATH,
PROMPTS_CSV, OUTPUT_DIR, NUM_SAMPLES, the prompts file's columns) are the script's own: it builds the
prompts and hands the same ones to the metrics. An empty variable is unset: submit.py's default
applies. A switch is on for true, 1 or yes, off for false, 0 or no (any case); any other value is
refused here, rather than read as off. SWEEP="guidance_scale=1.5,3 num_inference_steps=20,50" gives one
--sweep per setting (separated by spaces; a JSON list is kept whole, spaces and all). NUL-separated (for bash's `mapfile -d ''`), so that a value
may hold any other character. No torch: it runs in a second.
"""
import argparse
import json
import os
import re
import sys
from typing import List, Mapping, Optional, Sequence

from gen_worker.errors import UsageError, run_cli
from gen_worker.flags import flag_fields, switches
from gen_worker.spec import JobSpec

SCRIPT_OWN_GROUP = "data"  # input and output
ON, OFF = ("true", "1", "yes"), ("false", "0", "no")


def submit_args(environ: Mapping[str, str]) -> List[str]:
    """submit.py's arguments for the settings `environ` sets."""
    args: List[str] = []
    on_off = switches(JobSpec)
    for f in flag_fields(JobSpec):
        variable = f.name.upper()
        value = environ.get(variable, "")
        if f.metadata["group"] == SCRIPT_OWN_GROUP or not value:
            continue
        if f.name not in on_off:
            args += [f"--{f.name}", value]
        elif value.lower() in ON:
            args.append(f"--{f.name}")
        elif value in (f.metadata["choices"] or ()) and f.metadata["bare"]:
            args += [f"--{f.name}", value]  # COMPILE=regional -> --compile regional
        elif value.lower() not in OFF:
            values = f", or one of its values: {', '.join(f.metadata['choices'])}" if f.metadata["bare"] else ""
            raise UsageError(f"{variable}={value}: give true, 1 or yes to set --{f.name}, false, 0 or no to leave "
                             f"it off{values}")
    for axis in sweep_axes(environ.get("SWEEP", "")):
        args += ["--sweep", axis]
    return args


def sweep_axes(text: str) -> List[str]:
    """'guidance_scale=1.5,3 negative_prompt=["a, b", "c"]' -> one NAME=VALUES per setting; submit.py checks them."""
    axes: List[str] = []
    rest = text.strip()
    while rest:
        name, sep, values = rest.partition("=")
        if not sep or not name or re.search(r"\s", name):
            raise UsageError(f"SWEEP={text}: expected NAME=V1,V2,... for each setting, separated by spaces, e.g. "
                             "SWEEP='guidance_scale=1.5,3 num_inference_steps=20,50'")
        if values.startswith("["):
            try:
                end = json.JSONDecoder().raw_decode(values)[1]
            except ValueError as err:
                raise UsageError(f"SWEEP={text}: the values of {name} are not a JSON list ({err})") from None
        else:
            end = re.match(r"\S*", values).end()  # type: ignore[union-attr]  # \S* always matches
        axes.append(f"{name}={values[:end]}")
        rest = values[end:].lstrip()
    return axes


def main(argv: Optional[Sequence[str]] = None) -> int:
    argparse.ArgumentParser(prog="python -m gen_worker.env_settings", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    sys.stdout.write("".join(arg + "\0" for arg in submit_args(os.environ)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
