"""The docs tell the truth about the repository: benchmark tables match their JSON, code fences close, links
resolve, and nothing cites files outside the repository."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(
    r"\.\.[/]" + "shared" + "|" + "shared[/]" + "ASSETS"
)  # spelt in pieces: this file must not cite it
DOCS = [ROOT / "README.md", ROOT / "recipes" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render_module():
    spec = importlib.util.spec_from_file_location(
        "render_benchmarks", ROOT / "scripts" / "render_benchmarks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_tables_match_their_json():
    render = render_module()
    text = render.DOC.read_text()
    blocks = [m["name"] for m in render.BLOCK.finditer(text)]
    assert set(blocks) == set(render.BLOCKS), "every results file has its block in docs/benchmarks.md"
    assert render.render(text) == text, "run `make docs`: docs/benchmarks.md differs from scripts/results"


def test_a_changed_figure_is_caught(tmp_path, monkeypatch):
    """The check fails when a committed JSON figure changes (the test can fail for the reason it exists)."""
    import json
    import shutil

    render = render_module()
    results = tmp_path / "results"
    shutil.copytree(render.RESULTS, results, ignore=shutil.ignore_patterns("work", "*.png"))
    path = results / "qat" / "qat_benchmark.json"
    data = json.loads(path.read_text())
    data["results"][0]["int8_accuracy"] += 0.01
    path.write_text(json.dumps(data))
    monkeypatch.setattr(render, "RESULTS", results)
    text = render.DOC.read_text()
    assert render.render(text) != text


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_fences_close(doc):
    fences = [line for line in doc.read_text().splitlines() if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0, f"{doc.name} has an unclosed code fence"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text())
    missing = [link for link in links if not (doc.parent / link).exists()]
    assert not missing


def test_nothing_cites_files_outside_the_repository():
    """Users have the repository only: docs and code never point at the steering folder beside it."""
    files = DOCS + sorted(ROOT.glob("hfcompress/**/*.py")) + sorted(ROOT.glob("recipes/**/*"))
    files += sorted(ROOT.glob("scripts/*.py")) + sorted(ROOT.glob("tests/*.py")) + [ROOT / "Makefile"]
    offending = [str(f.relative_to(ROOT)) for f in files if f.is_file() and re.search(OUTSIDE, f.read_text())]
    assert not offending
