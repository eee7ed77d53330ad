"""README.md stays one short page and every link in the documentation leads somewhere.

Fast: reads files only (no process, no import of the package).
"""
import glob
import os
import re

import pytest

from conftest import REPO

README = os.path.join(REPO, "README.md")
DOCS = sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
# The folders' own READMEs link into docs/ and README.md too, so their links are checked as well.
FOLDER_READMES = [os.path.join(REPO, d, "README.md") for d in ("containers", "slurm", "evaluation")]
MARKDOWN = [README] + DOCS + [p for p in FOLDER_READMES if os.path.isfile(p)]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)\)")  # [text](target); no parentheses in our targets
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prose(text):
    """The text without fenced code blocks (a '# comment' in a bash block is no heading) and
    without inline code spans (a `[x](y)` shown as code is no link)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*\]\([^`\n]*`", "", text)


def slug(heading):
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation other than '-' and
    '_' removed, each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every heading's anchor in a markdown file, with GitHub's -1, -2 ... for repeated ones."""
    seen = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", _text(path))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def relative_links(path):
    for target in LINK.findall(_prose(_text(path))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        yield target


def test_the_slug_matches_githubs():
    assert slug("Resume, reruns and failures") == "resume-reruns-and-failures"
    assert slug("Sweeps: several configurations in one submission") == \
        "sweeps-several-configurations-in-one-submission"
    assert slug("Apptainer / Singularity") == "apptainer--singularity"
    assert slug("The prompts file: CSV, TSV, JSONL, Parquet") == "the-prompts-file-csv-tsv-jsonl-parquet"
    assert slug("Protocol (`metrics.json` -> `protocol`, and the report's Protocol table)") == \
        "protocol-metricsjson---protocol-and-the-reports-protocol-table"


def test_readme_is_one_short_page():
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    # one screen per topic: install, local, SLURM, sweeps, campaigns, speed levers, evaluation, output
    assert len(lines) <= 240, f"README.md has {len(lines)} lines; move details to docs/"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_leads_somewhere(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(dest):
            broken.append(f"{target}: no {os.path.relpath(dest, REPO)}")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {os.path.relpath(dest, REPO)}")
    assert not broken, broken


def test_every_docs_file_is_linked_from_readme():
    linked = {os.path.normpath(os.path.join(REPO, t.partition("#")[0])) for t in relative_links(README)}
    assert DOCS, "no docs/*.md"
    missing = [os.path.relpath(p, REPO) for p in DOCS if os.path.normpath(p) not in linked]
    assert not missing, f"not linked from README.md: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_docs_file_says_what_it_covers(path):
    """A title, then one line saying what the file covers."""
    lines = _text(path).splitlines()
    assert lines[0].startswith("# ") and lines[1] == "" and lines[2].strip() and lines[3] == "", path
