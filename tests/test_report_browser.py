"""The report of a real curation run (the 30 R1 chains and 60 Sky-T1 trajectories of AIME 2024, and three damaged
rows) opened in headless Chromium: the counts by reason, the examples, their highlighted markers and the filter box
work in the DOM, with no console error and no network request.

Needs Chromium at /usr/bin/chromium (Debian's `chromium`; .ci/run installs it) and the `playwright` package (the
`test` extra). RAYPIPE_REPORT_SCREENSHOT=docs/report.png also writes the README's screenshot.
"""
from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def report(shared_data, tmp_path_factory) -> tuple[Path, dict]:
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate

    root = tmp_path_factory.mktemp("browser")
    (root / "in").mkdir()
    for f in SHARED_DATA.glob("*/*_aime24.jsonl"):
        shutil.copy(f, root / "in" / f.name)
    with open(root / "in" / "deepseek-r1_aime24.jsonl", "a") as f:  # three damaged rows after R1's 30
        f.write('{"problem": "cut off", "answer": \n{"id": "x", "problem": "no response", "answer": "1"}\n'
                '{"id": "y", "problem": "no response either", "answer": "1"}\n')
    manifest = run_curate(CurateConfig(input=str(root / "in"), output=str(root / "out"), num_cpus=2,
                                       answer_from="final-or-thinking"))
    return root / "out" / "report.html", manifest


@pytest.fixture(scope="module")
def browser(spawn):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (pip install "
                                   "-e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def visible(page) -> int:
    return page.locator(".example:visible").count()


def test_the_report_in_a_browser(report, browser, tmp_path):
    path, manifest = report
    c = manifest["counts"]
    assert len(manifest["by_source"]) == 3 and c["records"] == 93 and c["rejected"] == 3
    assert sum(c["rejected_by_reason"].values()) == 3 and len(c["rejected_by_reason"]) == 2  # two kinds of damage
    for entry in manifest["by_source"].values():
        assert sum(entry["dropped_by_reason"].values()) == entry["dropped"]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri())

    # per source, the kinds of examples; every id the manifest lists is on the page
    assert page.locator("section.ex-source").count() == 3
    for source, entry in manifest["by_source"].items():
        section = page.locator(f"section.ex-source[data-source='{source}']")
        for kind, ids in entry["examples"].items():
            shown = section.locator(f".ex-category[data-category='{kind}'] .example")
            assert [shown.nth(i).get_attribute("data-id") for i in range(shown.count())] == ids
    kinds = {page.locator(".ex-category").nth(i).get_attribute("data-category")
             for i in range(page.locator(".ex-category").count())}
    assert {"most_branching", "over_threshold", "under_threshold"} <= kinds
    assert any(k.startswith("reason:verdict:") for k in kinds)

    # markers highlighted: the lexicon's words, and every branch step shows one
    markers = page.locator(".example mark.marker")
    words = {markers.nth(i).text_content().lower() for i in range(min(markers.count(), 300))}
    assert markers.count() > 50 and words == {"perhaps", "another", "alternatively"}
    branch = page.locator("li.branch")
    assert branch.count() > 20
    assert all(branch.nth(i).locator(":scope > mark.marker").count() > 0 for i in range(min(branch.count(), 40)))
    # dropped and rejected rows by reason, in a table the page shows
    reasons = page.locator("h2:has-text('Why rows were dropped or rejected') + p + table")
    heads = reasons.locator("th").all_inner_texts()
    assert heads[:2] == ["source", "dropped"] and "rule:top" in heads and "verdict:wrong" in heads
    text = page.content()
    assert all(html.escape(k, quote=False) in text for k in c["rejected_by_reason"])

    # the filter box: select and type, count what stays visible
    total = page.locator(".example").count()
    assert visible(page) == total and page.locator("#ex-count").inner_text() == f"{total} of {total} examples"
    page.select_option("#ex-verdict", "wrong")
    wrong = page.locator(".example[data-verdict='wrong']").count()
    assert 0 < wrong < total and visible(page) == wrong
    assert page.locator("#ex-count").inner_text() == f"{wrong} of {total} examples"
    assert page.locator(".ex-category:visible").count() < page.locator(".ex-category").count()  # empty kinds hide
    page.select_option("#ex-verdict", "")
    page.select_option("#ex-decision", "keep")
    kept = page.locator(".example[data-decision='keep']").count()
    assert 0 < kept < total and visible(page) == kept
    page.select_option("#ex-decision", "")
    page.fill("#ex-text", "deepseek")
    r1 = page.locator(".example[data-source='DeepSeek-R1']").count()
    assert 0 < r1 < total and visible(page) == r1
    page.fill("#ex-text", "rule:top")
    ruled = page.locator(".example:visible")
    assert ruled.count() > 0 and all("rule:top" in ruled.nth(i).get_attribute("data-search")
                                     for i in range(ruled.count()))
    page.fill("#ex-text", "")
    assert visible(page) == total

    assert not errors, errors
    assert not requests, f"the report fetched {requests}"
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    if os.environ.get("RAYPIPE_REPORT_SCREENSHOT"):
        readme_screenshot(page, Path(os.environ["RAYPIPE_REPORT_SCREENSHOT"]))


def readme_screenshot(page, target: Path) -> None:
    """The examples' top: the filter box and an opened example with its markers, as a small palette PNG."""
    from PIL import Image

    page.set_viewport_size({"width": 1100, "height": 960})
    page.evaluate("window.scrollTo(0, document.getElementById('examples').getBoundingClientRect().top"
                  " + window.scrollY - 10)")
    raw = target.with_suffix(".raw.png")
    page.screenshot(path=str(raw))
    Image.open(raw).convert("RGB").quantize(colors=64).save(target, optimize=True)
    raw.unlink()
    assert target.stat().st_size < 300_000
