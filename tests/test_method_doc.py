"""docs/method.md is the repository's account of the method: every file that cites it names a section it has, and
nothing cites a paper summary outside the repository."""

import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")
CITING = ("configs", "tests", "genscl_jax", "benchmarks", "README.md", "RESULTS.md", "BENCHMARKS.md")


def cited_files():
    for entry in CITING:
        path = os.path.join(ROOT, entry)
        if os.path.isfile(path):
            yield path
        for folder, _, files in os.walk(path):
            yield from (os.path.join(folder, f) for f in files if f.endswith((".py", ".md")))


def test_every_citation_names_a_section_of_docs_method_md():
    with open(os.path.join(ROOT, "docs", "method.md")) as f:
        sections = set(re.findall(r"^## (.+)$", f.read(), re.M))
    cited = {}
    for path in cited_files():
        with open(path) as f:
            text = f.read()
        assert "PAPER" + ".md" not in text, f"{path} cites a file outside the repository; cite docs/method.md"
        for section in re.findall(r'docs/method\.md,? "([^"]+)"', text):
            cited.setdefault(section, []).append(os.path.relpath(path, ROOT))
    assert cited, "no file cites docs/method.md by section"
    missing = {section: files for section, files in cited.items() if section not in sections}
    assert not missing, f"sections cited but not in docs/method.md: {missing}"

