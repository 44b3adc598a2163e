"""The docs point at what exists: every relative link and anchor in README and docs resolves, and every code reference
(`file.py::function::a fragment of its code`) names a function that holds that code. No line numbers, which rot."""

import ast
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "agents" / "README.md"]
PAGES += [ROOT / "benchmark" / "results" / "README.md"]
REFERENCE = re.compile(r"`([\w/.-]+\.py)::([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(page):
    """The page without its fenced code blocks (commands, diagrams), where brackets are not links."""
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


def slugs(page):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = [line.lstrip("#").strip() for line in prose(page).splitlines() if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def references():
    return [(page.name, *m.groups()) for page in PAGES for m in REFERENCE.finditer(prose(page))]


def resolve(path, chain):
    """The source of the function or class that `chain` names (a::b: method b of a); the rest of the chain, a fragment
    of code, must be in it. Returns None if the name or the fragment is not there."""
    source = (ROOT / path).read_text()
    names = [name.strip() for name in chain.split("::")]  # a reference may break across lines
    body, scope = source, ast.parse(source).body
    while names:
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == names[0]), None)
        if node is None:
            break
        body, scope, names = ast.get_source_segment(source, node), node.body, names[1:]
    if len(names) > 1 or body is source:
        return None
    fragment = " ".join(names[0].split()) if names else ""
    return body if fragment in " ".join(body.split()) else None


def test_every_page_has_code_references_and_they_resolve():
    found = references()
    assert len([r for r in found if r[0] == "ppo.md"]) >= 30  # docs/ppo.md points at the code it explains
    broken = [f"{page}: {path}::{chain}" for page, path, chain in found if resolve(path, chain) is None]
    assert not broken, broken


def test_a_reference_that_no_longer_points_at_its_code_is_caught():
    assert resolve("ppo_continuous.py", "ppo_loss::advantages.std() + 1e-8")
    assert resolve("ppo_continuous.py", "Agent::act::.sum(-1)")
    assert resolve("ppo_continuous.py", "ppo_loss::advantages.std() + 1e-6") is None  # the code changed
    assert resolve("ppo_continuous.py", "no_such_function") is None
    assert resolve("ppo_continuous.py", "compute_gae::torch.randperm") is None  # in another function


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in slugs(file):
            broken.append(target)
    assert not broken, broken


def test_no_page_cites_line_numbers():
    for page in PAGES:
        assert not re.search(r"\.py`? (L|lines? )\d+", page.read_text()), page


RESULT = re.compile(r"\d+\.\d+ \[\d+\.\d+, \d+\.\d+\]|\d+ ± \d+")  # a P or IQM with its interval; a mean ± std


def readme_result_blocks(text):
    """README's opening (to the first ## heading) and its Results section, in blocks: a paragraph, or a table with the
    paragraph under it (which names its reports)."""
    opening = text.split("\n## ", 1)[0]
    results = text.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for part in (opening, results):
        for block in re.split(r"\n\s*\n", part):
            if blocks and blocks[-1].lstrip().startswith("|") and not block.lstrip().startswith("|"):
                blocks[-1] += "\n" + block
            else:
                blocks.append(block)
    return blocks


def unmatched_results(text):
    """Each result on README's first screen and in its Results section, exactly as printed in a report its block
    links; returns those that are not."""
    missing = []
    for block in readme_result_blocks(text):
        reports = [t for t in LINK.findall(block) if t.startswith("benchmark/results/") and t.endswith(".md")]
        printed = "\n".join((ROOT / report).read_text() for report in reports)
        missing += [
            f"{number}: not in {', '.join(reports) or 'a linked report'}"
            for number in RESULT.findall(block)
            if number not in printed
        ]
    return missing


def test_every_result_on_readmes_first_screen_is_printed_in_the_report_it_links():
    text = (ROOT / "README.md").read_text()
    checked = [number for block in readme_result_blocks(text) for number in RESULT.findall(block)]
    assert len(checked) >= 20  # the check is only as strong as what it finds in the blocks it checks
    assert not unmatched_results(text), unmatched_results(text)


def test_a_result_not_in_its_report_is_caught():
    text = (ROOT / "README.md").read_text()
    first = RESULT.findall(text)[0]
    changed = str((int(first[0]) + 1) % 10) + first[1:]  # its first digit, one up
    assert [m for m in unmatched_results(text.replace(first, changed, 1)) if m.startswith(f"{changed}: not in ")]
    unlinked = re.sub(r"\]\(benchmark/results/[^)]+\)", "](docs/experiments.md)", text)
    assert f"{first}: not in a linked report" in unmatched_results(unlinked)  # a result whose block links no report


def test_speeds_run_time_command_reads_the_shipped_run_data():
    """docs/speed.md's command, the source of the README's run times, on E3's shipped data: each variant's median."""
    block = re.search(
        r"```\n(python - (benchmark/results/E10/runs\.csv\.gz) <<'PY'\n.*?\nPY)\n```",
        (ROOT / "docs" / "speed.md").read_text(),
        re.S,
    )
    command = block.group(1).replace(block.group(2), "benchmark/results/E3/runs.csv.gz", 1)
    command = command.replace("python", shlex.quote(sys.executable), 1)  # this test's interpreter
    out = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "Walker2d-v4 ppo_wm: median 4.1 min over 5 runs",
        "Walker2d-v4 ppo_wm_aux: median 4.0 min over 5 runs",
        "Walker2d-v4 ppo_wm_aux_alpha0.05: median 3.9 min over 5 runs",
    ]
