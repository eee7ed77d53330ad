"""The package map (gen_worker/__init__.py) and README's module list name every module there is."""
import os
import re

import gen_worker
from conftest import REPO

PACKAGE = os.path.join(REPO, "gen_worker")


def _modules():
    for root, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py") and not (name == "__init__.py" and root == PACKAGE):
                yield os.path.relpath(os.path.join(root, name), PACKAGE)


def test_the_package_map_names_every_module():
    doc = gen_worker.__doc__
    for module in _modules():
        folder, name = os.path.split(module)
        if name == "__init__.py":
            continue
        assert (f"{folder}/" in doc if folder else True) and name.removesuffix(".py") in doc, module


def test_readme_names_every_module():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        development = f.read().split("## Development", 1)[1]
    named = set(re.findall(r"`([a-z_/]+\.py)`", development))
    missing = [m for m in _modules() if not m.endswith("__init__.py") and m not in named
               and os.path.basename(m) not in named]
    assert not missing, missing


def test_the_launchers_put_the_checkout_on_the_workers_path():
    """Local workers and SLURM tasks import this checkout's gen_worker, not another one installed."""
    from gen_worker import local
    from gen_worker.slurm import submit
    for module in (local, submit):
        assert os.path.isfile(os.path.join(module.PACKAGE_PARENT, "gen_worker", "__init__.py")), module.__name__
