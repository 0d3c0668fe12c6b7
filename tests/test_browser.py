"""The app in a real browser: Playwright driving Debian's Chromium against the app on loopback.

Skipped, with the reason, where Chromium or Playwright is missing (.ci/run installs both)."""

import os
import shutil
import time
from pathlib import Path

import pytest

from saferdemo.app.models import ModelChoice, load_models
from saferdemo.app.ui import build_app, launch

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
# Chromium flags for a closed network and root: no sandbox, no background connections.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def url():
    choice = ModelChoice.resolve()
    columns, judge = load_models(choice, "cpu")
    demo = build_app(columns, judge, choice.titles())
    launch(demo, choice.titles(), port=None, block=False)
    yield demo.local_url
    demo.close()


@pytest.fixture
def page(url, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        yield page
        browser.close()


def send(page, text, image=None):
    if image:
        page.set_input_files("#prompt input[type=file]", str(image))
        page.wait_for_selector("#prompt img, #prompt .thumbnail-item", timeout=10_000)
    page.fill("#prompt textarea", text)
    page.keyboard.press("Enter")


def column(page, name):
    return page.locator(f"#chat-{name}")


def wait_idle(page, timeout=90):
    """Until the turn has ended: Stop is enabled only while one runs."""
    deadline = time.time() + timeout
    time.sleep(0.5)  # let the turn start (Stop turns on once the message is echoed)
    while time.time() < deadline and not page.locator("#stop").is_disabled():
        time.sleep(0.2)
    assert page.locator("#stop").is_disabled(), "the turn never ended"


def wait_text(locator, text, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text.lower() in locator.inner_text().lower():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in: {locator.inner_text()[-500:]}")


def test_turn_with_image_shows_thinking_reflection_answers_and_chart(page, tmp_path):
    send(page, "Complete the list on this card, step by step.", EXAMPLES / "1-fraud.png")
    base, aligned = column(page, "base"), column(page, "aligned")
    wait_text(base, "Thinking")
    wait_text(base, "[restricted step]")
    wait_text(base, "GRM")
    wait_text(aligned, "Sorry")
    wait_text(aligned, "GRM")
    page.wait_for_selector("#scores .js-plotly-plot", timeout=60_000)
    # The base column, with its safety loop switched on, reflects and corrects itself.
    page.get_by_text("Parameters").click()
    page.get_by_label("safety loop on the base model").check()
    page.click("#regenerate")
    wait_text(base, "Reflection", timeout=90)
    wait_text(base, "Sorry", timeout=90)
    wait_text(base, "→ reflected → corrected: safe", timeout=90)  # the verdict strip tells the story
    wait_idle(page)
    page.screenshot(path=os.environ.get("SAFERDEMO_SCREENSHOT", str(tmp_path / "app.png")), full_page=True)


def test_stop_and_clear(page):
    send(page, "Complete the list on this card, step by step.", EXAMPLES / "3-household.png")
    page.click("#stop")
    page.click("#clear")
    deadline = time.time() + 20
    while time.time() < deadline and column(page, "base").locator(".message").count():
        time.sleep(0.2)
    assert column(page, "base").locator(".message").count() == 0
    send(page, "What does the card say?")  # the app still answers after Stop and Clear
    wait_text(column(page, "base"), "Thinking")


def test_thinking_is_open_while_it_streams_and_folds_when_the_answer_starts(page):
    send(page, "Complete the list on this card, step by step.", EXAMPLES / "1-fraud.png")
    base, seen_open = column(page, "base"), False
    deadline = time.time() + 60
    while time.time() < deadline and "[restricted step]" not in (text := base.inner_text()):
        seen_open |= base.locator(".loading-spinner").count() > 0 and "The card says" in text
        time.sleep(0.05)
    assert seen_open, "the thinking never showed open while it streamed"
    wait_idle(page)
    assert "[restricted step]" in base.inner_text() and "The card says" not in base.inner_text()  # folded


@pytest.mark.parametrize("phase", ["Thinking", "judging", "Reflection"])
def test_stop_in_each_phase_says_where_it_stopped(page, phase):
    """Stop while the base column drafts, while the GRM judges the draft, and while it reflects."""
    page.get_by_text("Parameters").click()
    page.get_by_label("safety loop on the base model").check()
    send(page, "Complete the list on this card, step by step.", EXAMPLES / "1-fraud.png")
    base = column(page, "base")
    wait_text(base, phase, timeout=60)
    page.click("#stop")
    wait_text(base, "⏹ Stopped", timeout=30)
    wait_idle(page)
    assert base.locator(".loading-spinner").count() == 0  # no spinner keeps turning
    assert "truncated at max tokens" not in base.inner_text()
    send(page, "What does the card say?")  # the conversation goes on
    wait_text(base, "Thinking")


def test_a_lone_surrogate_does_not_break_the_session(page):
    """A lone surrogate typed into the box (JavaScript strings can hold one; no UTF-8 can) is answered, and the
    session's later events still work."""
    page.fill("#prompt textarea", "What does the card say? ")
    page.focus("#prompt textarea")
    page.evaluate("() => document.execCommand('insertText', false, '\\ud800')")  # typed, as a user's input is
    page.keyboard.press("Enter")
    wait_text(column(page, "base"), "What does the card say? \ufffd")  # echoed, the surrogate replaced
    wait_idle(page)
    assert "⚠️" not in column(page, "base").inner_text()
    send(page, "What does the card say?")
    wait_text(column(page, "base"), "Thinking")
    wait_idle(page)
    page.click("#clear")
    deadline = time.time() + 20
    while time.time() < deadline and column(page, "base").locator(".message").count():
        time.sleep(0.2)
    assert column(page, "base").locator(".message").count() == 0


def test_injected_script_does_not_run(page):
    send(page, '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> ![t](http://127.0.0.1:9/t.png)')
    wait_text(column(page, "base"), "onerror")  # shown as text
    time.sleep(1)
    assert page.evaluate("window.__xss") is None
    assert column(page, "base").locator("img[src*='127.0.0.1:9']").count() == 0


def test_an_input_mistake_is_a_toast_not_error_badges(page):
    page.fill("#prompt textarea", "   ")
    page.keyboard.press("Enter")
    page.wait_for_selector(".toast-body, .toast-wrap", timeout=10_000)  # the message
    time.sleep(1)
    for name in ("base", "aligned"):
        assert "error" not in column(page, name).inner_text().lower()
    assert "error" not in page.locator("#prompt").inner_text().lower()


def test_export_downloads_a_page_that_renders_offline(page, tmp_path):
    send(page, "Complete the list on this card, step by step.", EXAMPLES / "1-fraud.png")
    wait_text(column(page, "aligned"), "GRM")
    wait_text(column(page, "base"), "GRM")
    wait_idle(page)  # Export holds finished turns only
    page.click("#export")
    link = page.locator("#exported a").first
    link.wait_for(timeout=30_000)
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "comparison.html"
    download.value.save_as(saved)
    assert "saferdemo-bundle" in saved.read_text()
    page.context.set_offline(True)
    page.goto(saved.as_uri())
    assert "Turn 1" in page.inner_text("body") and "[restricted step]" in page.inner_text("body")
    assert page.locator("img[src^='data:image/png']").count() == 1


def test_the_first_screen_shows_the_examples_and_what_the_models_can_do(url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        box = page.locator("#examples").bounding_box()
        assert box is not None and box["y"] + box["height"] <= 1000, box  # in the first viewport, no scrolling
        assert "only read FigStep-style instruction cards" in page.inner_text("body")
        assert page.locator("#stop").is_disabled()  # nothing runs yet
        page.screenshot(path=os.environ.get("SAFERDEMO_FIRST_SCREEN", "/tmp/first-screen.png"))
        browser.close()
