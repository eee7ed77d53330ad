"""--sweep NAME=V1,V2,... or NAME=["V1", "V2"]: one submission runs every combination of the values given.

Each configuration is an ordinary run in its own subfolder of --output_dir, named by its values
(output/sweep_record.py), with the same prompts and seeds as every other one: a configuration's
folder is byte-identical to a plain run with those settings, so configurations compare image by
image. The values are read by the same argparse options as the flags themselves (re-parsing the
command line with `--NAME V` appended), so a swept value gets the type, choices and checks of its flag.
"""
import argparse
import dataclasses
import itertools
import json
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from gen_worker import flags
from gen_worker.errors import UsageError
from gen_worker.output.sweep_record import SweepRecord, configuration_name, read_sweep_record, write_sweep_record
from gen_worker.spec import JobSpec

# Settings that decide what the images look like (recorded with each folder) may be swept.
SWEEPABLE = flags.recorded_names(JobSpec)
# Recorded switches (vae_tiling) are swept with the values true and false.
SWITCHES = frozenset(flags.switches(JobSpec))


@dataclasses.dataclass(frozen=True)
class Configuration:
    name: str  # its subfolder of the sweep's --output_dir
    overrides: Dict[str, str]  # setting -> value, as given on the command line


def parse_axes(texts: Sequence[str]) -> Dict[str, List[str]]:
    """["guidance_scale=1.5,3", 'negative_prompt=["a, b", "c"]'] -> {setting: [values]}, in the order given."""
    axes: Dict[str, List[str]] = {}
    for text in texts:
        name, sep, values_text = text.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name:
            raise UsageError(f"--sweep {text}: expected NAME=V1,V2,... (e.g. --sweep guidance_scale=1.5,3,5)")
        if name not in SWEEPABLE:
            raise UsageError(f"--sweep {text}: {name} is not a setting that can be swept "
                             f"(those recorded with the folder: {', '.join(SWEEPABLE)})")
        if name in axes:
            raise UsageError(f"--sweep names {name} twice: give all its values once, e.g. --sweep {name}=A,B")
        values = _json_values(text, values_text) if values_text.lstrip().startswith("[") else \
            _comma_values(text, name, values_text)
        if not values or any(not v for v in values):
            raise UsageError(f"--sweep {text}: an empty value (values are separated by commas)")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UsageError(f"--sweep {text}: {', '.join(map(repr, repeated))} given twice")
        axes[name] = values
    return axes


def _json_values(text: str, values_text: str) -> List[str]:
    """A JSON list, each item as is; a number keeps the text it is written with (its flag reads it, as in
    the comma form)."""
    try:
        values = json.loads(values_text, parse_int=str, parse_float=str, parse_constant=str)
    except ValueError as err:
        raise UsageError(f"--sweep {text}: not a JSON list ({err})") from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise UsageError(f"--sweep {text}: a JSON list holds strings and numbers only, e.g. [\"a, b\", \"c\"]")
    return values


def _comma_values(text: str, name: str, values_text: str) -> List[str]:
    """V1,V2,...: values taken exactly as written, so spaces around one are refused rather than guessed at."""
    values = values_text.split(",")
    padded = [v for v in values if v != v.strip()]
    if padded:
        raise UsageError(f"--sweep {text}: {padded[0]!r} has spaces around it; write {name}=A,B without spaces, "
                         f"or give values with commas or spaces as a JSON list: --sweep '{name}=[\"a, b\", \"c\"]'")
    return values


def configurations(axes: Dict[str, List[str]]) -> List[Configuration]:
    """Every combination, the last setting varying fastest; names checked distinct."""
    names = list(axes)
    configs = [Configuration(configuration_name(dict(zip(names, values))), dict(zip(names, values)))
               for values in itertools.product(*(axes[n] for n in names))]
    seen: Dict[str, Configuration] = {}
    for c in configs:
        if c.name in seen:
            raise UsageError(f"--sweep: {seen[c.name].overrides} and {c.overrides} would share the folder "
                             f"{c.name}; give values that differ in more than punctuation or a path's folder")
        seen[c.name] = c
    return configs


FlagReader = Callable[[str, str], Any]  # (setting, value as given) -> the value its flag reads


def flag_words(name: str, text: str) -> List[str]:
    """A swept value as the command line says it: --NAME=VALUE, or for a switch --NAME (true) or nothing (false)."""
    if name not in SWITCHES:
        return [f"--{name}={text}"]
    if text.lower() not in ("true", "false"):
        raise UsageError(f"--sweep {name}: {text!r} is not true or false (--{name} is a switch)")
    return [f"--{name}"] if text.lower() == "true" else []


def flag_reader(parser: argparse.ArgumentParser, argv: Sequence[str]) -> FlagReader:
    """What `--NAME=VALUE` gives on this command line: the value after its flag's own type and choices."""
    return lambda name, text: getattr(parser.parse_args([*argv, *flag_words(name, text)]), name)


def check_distinct(axes: Dict[str, List[str]], read: FlagReader) -> None:
    """Values that their flag reads as one (7.5, 7.50, 7.5e0) would be identical configurations."""
    for name, values in axes.items():
        same: Dict[Any, List[str]] = {}
        for text in values:
            same.setdefault(read(name, text), []).append(text)
        for value, texts in same.items():
            if len(texts) > 1:
                listed = f"{', '.join(texts[:-1])} and {texts[-1]}"
                raise UsageError(f"--sweep {name}: {listed} are one value to --{name} ({value}): give it once")


def keep_recorded(configs: Sequence[Configuration], record: Optional[SweepRecord],
                  read: FlagReader) -> List[Configuration]:
    """A rerun's configuration that its flags read as a recorded one (1.50 for the recorded 1.5, either
    form) is that one: its name (folder) and values as first given."""
    if record is None:
        return list(configs)

    def key(overrides: Dict[str, str]) -> FrozenSet[Tuple[str, Any]]:
        return frozenset((name, read(name, text)) for name, text in overrides.items())

    settings = set(configs[0].overrides) if configs else set()
    recorded = {key(c.overrides): c for c in record.configurations if set(c.overrides) == settings}
    kept = []
    for config in configs:
        old = recorded.get(key(config.overrides))
        kept.append(Configuration(old.name, dict(old.overrides)) if old else config)
    return kept


def check_not_given(args: argparse.Namespace, axes: Dict[str, List[str]]) -> None:
    """A swept setting also given as a flag is a contradiction, not a default to override silently."""
    defaults = {f.name: None if f.default is dataclasses.MISSING else f.default for f in flags.flag_fields(JobSpec)}
    for name in axes:
        if getattr(args, name) != defaults[name]:
            raise UsageError(f"--{name} is given and swept (--sweep {name}=...): give its values in --sweep only")


def configuration_args(parser: argparse.ArgumentParser, argv: Sequence[str], config: Configuration,
                       output_dir: str) -> argparse.Namespace:
    """The command line of one configuration: argv with its values and subfolder appended (the last wins)."""
    extra = [word for name, value in config.overrides.items() for word in flag_words(name, value)]
    args = parser.parse_args([*argv, *extra])
    args.output_dir = output_dir
    return args


def swept_required_flags(argv: Sequence[str]) -> List[str]:
    """Required flags given by --sweep instead (--model_path), found before the full parse needs them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--sweep", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    names = {text.partition("=")[0].strip().lstrip("-") for text in known.sweep}
    return [f.name for f in flags.flag_fields(JobSpec)
            if f.name in names and f.default is dataclasses.MISSING]


def record_sweep(top: str, configs: Sequence[Configuration]) -> None:
    """sweep.json lists every configuration the folder holds, and each setting's values in the order
    first given: a rerun with more values adds to it."""
    old = read_sweep_record(top)
    known = list(old.configurations) if old else []
    entries: List[Dict[str, Any]] = [{"name": c.name, "folder": c.folder, "overrides": c.overrides} for c in known]
    entries += [{"name": c.name, "folder": c.name, "overrides": c.overrides}
                for c in configs if c.name not in {e["name"] for e in entries}]
    axes: Dict[str, List[str]] = {}
    for entry in entries:
        for name, value in entry["overrides"].items():
            if value not in axes.setdefault(name, []):
                axes[name].append(value)
    write_sweep_record(top, axes, entries)
