"""The package map (gen_worker/__init__.py) names every module there is; README.md links to it and
neither README.md nor docs/ keeps a copy of it."""
import glob
import os
import re

import pytest

import gen_worker
from conftest import REPO

PACKAGE = os.path.join(REPO, "gen_worker")


def _modules():
    """Every module file under gen_worker/, as a path relative to it (`output/record.py`).

    A folder's `__init__.py` is the folder itself (the map names the folder); the top-level
    `__init__.py` is the map."""
    for root, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py") and name != "__init__.py":
                yield os.path.relpath(os.path.join(root, name), PACKAGE).replace(os.sep, "/")


def _word(name):
    """`name` as a whole word: not the tail of a longer name (`record.py` in `sweep_record.py`) nor a
    module of another folder (`submit.py` in `slurm/submit.py`).

    Whole words, because a plain substring test passes for about half of the modules when their
    entry is deleted: `png` is still found in `png_file.py`, `task` in `slurm_task.py`, `record` in
    `sweep_record.py`, `submit` in `submit.py's command line`, and so on."""
    return re.compile(r"(?<![\w./])(?:gen_worker/)?" + re.escape(name) + r"(?![\w])")


def _entries(doc):
    """The map's entries: name (`cli.py`, `output/`) -> its text, continuation lines included.

    An entry is a line whose first word ends in `.py` or `/`, followed by the lines indented deeper
    than that word."""
    entries = {}
    name, indent = None, 0
    for line in doc.splitlines():
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        first = stripped.split(" ", 1)[0]
        if name and stripped and depth > indent:
            entries[name] += " " + stripped
        elif re.fullmatch(r"[\w./]+(\.py|/)", first):
            name, indent = first, depth
            entries[name] = stripped[len(first):]
        else:
            name = None
    return entries


def _named(module, doc, entries):
    """Whether the map has an entry for `module`: one of its own (`cli.py`, `output/record.py`), or
    its file name as a whole word in its folder's entry (`output/` ... `record.py`). A mention
    elsewhere does not count (`flags.py` is also named in `spec.py`'s entry: deleting its own entry
    must still fail). A folder's `__main__.py` is also named by `python -m gen_worker.<folder>`."""
    if module in entries:
        return True
    if "/" not in module:
        return False
    folder, name = module.rsplit("/", 1)
    if name == "__main__.py" and _word("python -m gen_worker." + folder.replace("/", ".")).search(doc):
        return True
    return bool(_word(name).search(entries.get(folder + "/", "")))


def unnamed_modules(doc):
    entries = _entries(doc)
    return [m for m in _modules() if not _named(m, doc, entries)]


def test_the_package_map_names_every_module():
    assert list(_modules()), "no modules found"
    missing = unnamed_modules(gen_worker.__doc__)
    assert not missing, f"gen_worker/__init__.py does not name {missing}"


def test_the_map_names_only_modules_that_exist():
    """A folder's entry that names a file the folder does not have (moved, renamed) is stale."""
    stale = []
    for name, text in _entries(gen_worker.__doc__).items():
        path = os.path.join(PACKAGE, name)
        if not os.path.exists(path):
            stale.append(name)
        elif name.endswith("/"):
            stale += [name + f for f in re.findall(r"(?<![\w./])(\w+\.py)\b", text)
                      if not os.path.isfile(os.path.join(path, f))]
    assert not stale, f"gen_worker/__init__.py names what is not there: {stale}"


def test_the_check_misses_no_deleted_entry():
    """Take each module out of the map, alone: the check above must notice that it is gone."""
    doc = gen_worker.__doc__
    for module in _modules():
        cut = _without_entry(doc, module)  # its own entry, if it has one
        if "/" in module:
            folder, name = module.rsplit("/", 1)
            cut = _cut_in_entry(cut, folder + "/", name)  # its file name in its folder's entry
            if name == "__main__.py":
                cut = _word("python -m gen_worker." + folder.replace("/", ".")).sub("", cut)
        assert module in unnamed_modules(cut), f"deleting {module} from the map goes unnoticed"


def _without_entry(doc, entry):
    """`doc` without the lines of `entry`."""
    out, inside, indent = [], False, 0
    for line in doc.splitlines():
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if stripped.split(" ", 1)[0] == entry:
            inside, indent = True, depth
            continue
        if inside and stripped and depth > indent:
            continue
        inside = False
        out.append(line)
    return "\n".join(out)


def _cut_in_entry(doc, entry, name):
    """`doc` without the whole word `name` in the lines of `entry`."""
    out, inside, indent = [], False, 0
    for line in doc.splitlines():
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if stripped.split(" ", 1)[0] == entry:
            inside, indent = True, depth
        elif inside and not (stripped and depth > indent):
            inside = False
        out.append(_word(name).sub("", line) if inside else line)
    return "\n".join(out)


def _markdown(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_readme_links_to_the_package_map():
    """README.md does not repeat the map (one copy only, in gen_worker/__init__.py): it links to it."""
    assert re.search(r"\]\(\.?/?gen_worker/__init__\.py\)", _markdown(os.path.join(REPO, "README.md"))), \
        "README.md has no link to gen_worker/__init__.py"


DOCUMENTATION = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


@pytest.mark.parametrize("path", DOCUMENTATION, ids=lambda p: os.path.relpath(p, REPO))
def test_no_copy_of_the_map_in_the_documentation(path):
    """A page that names a quarter of the modules is a second package map, which would drift from
    the first: name the few a topic needs and link to gen_worker/__init__.py for the rest."""
    text = _markdown(path)
    modules = list(_modules())
    # a file name, alone or at the end of a path (`worker/pipeline.py`), not inside a longer name
    named = [m for m in modules
             if re.search(r"(?<![\w.])" + re.escape(os.path.basename(m)) + r"(?!\w)", text)]
    assert len(named) < len(modules) / 4, f"{os.path.relpath(path, REPO)} names {len(named)} modules: {named}"
