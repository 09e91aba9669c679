"""The review page in a real browser: Debian's Chromium driven by Playwright.

From a digest's link, remove two, keep one, snooze one, and the store shows exactly that;
links opened by a mail scanner, a replayed submit and a tampered link change nothing; the
page fits a 390 px wide phone. A screenshot of the page and the rendered digest are kept in
tests/output/ for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from digest_site import LINK, decisions, make_site, parse, parts, pending, review_links
from helpers import NOW
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import select

from service.digest import deliver_outbox, queue_digest
from service.model import Channel, SuggestionState
from service.store.models import AuditEntry
from service.suggestions import decide
from service.web import start

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[1] / "output"
PHONE = {"width": 390, "height": 844}
S = SuggestionState

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium; "
    ".ci/run installs it)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # Never a downloaded browser: the system's Chromium.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


def no_horizontal_scroll(page: Page) -> bool:
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return bool(width <= inner)


def test_decide_from_a_digest_link_on_a_phone(home, tmp_path, browser: Browser) -> None:
    OUTPUT.mkdir(exist_ok=True)
    site = make_site(tmp_path / "site", size=150)
    application = site.app()
    server = start(application)
    try:
        assert queue_digest(application, NOW)
        assert deliver_outbox(application, NOW) == 1
        (eml,) = (site.root / "outbox").glob("*.eml")
        text, html = parts(parse(eml.read_bytes()))
        digest_file = OUTPUT / "digest.html"
        digest_file.write_text(html, encoding="utf-8")
        (OUTPUT / "digest.eml").write_bytes(eml.read_bytes())
        (link,) = set(review_links(html))
        before = decisions(application)
        rows = pending(application)[:4]
        ids = [s.id for s in rows]

        context = browser.new_context(viewport=PHONE, device_scale_factor=1)
        page = context.new_page()

        # A mail scanner opens every link of the email: nothing changes.
        ours = urlsplit(server.url).netloc
        opened = 0
        for url in set(LINK.findall(text) + LINK.findall(html)):
            if urlsplit(url).netloc == ours:
                assert context.request.get(url).status == 200
                opened += 1
        assert opened >= 1
        assert decisions(application) == before

        # The digest itself, as a phone shows it.
        page.goto(digest_file.as_uri())
        assert no_horizontal_scroll(page)
        page.screenshot(path=str(OUTPUT / "digest-390px.png"), full_page=True)

        # Open the page from the digest's link.
        page.get_by_role("link", name="Review").first.click()
        page.wait_for_url(link)
        assert page.get_by_role("heading", name="Review suggestions").is_visible()
        assert no_horizontal_scroll(page)
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select')]
                .filter(e => e.labels.length === 0).map(e => e.name)"""
        )
        assert unlabelled == []

        def row(suggestion_id: int):  # type: ignore[no-untyped-def]
            return page.locator(f"#s-{suggestion_id}")

        row(ids[0]).get_by_label("Remove").check()
        row(ids[1]).get_by_label("Remove").check()
        row(ids[2]).get_by_label("Keep").check()
        # The keyboard alone: focus the fourth row's choice and move to "Snooze".
        row(ids[3]).get_by_label("Later").focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        assert row(ids[3]).get_by_label("Snooze").is_checked()
        for suggestion in rows:
            group = page.get_by_role(
                "group",
                name=f"Decision for {suggestion.connection.display_name or suggestion.connection.handle}",
            )
            assert group.count() >= 1
        page.screenshot(path=str(OUTPUT / "review-page-390px.png"))
        page.screenshot(path=str(OUTPUT / "review-page-390px-full.png"), full_page=True)

        form = {
            "csrf": page.locator("input[name=csrf]").get_attribute("value") or "",
            "snooze_days": "30",
            f"d-{ids[0]}": "remove",
            f"d-{ids[1]}": "remove",
            f"d-{ids[2]}": "keep",
            f"d-{ids[3]}": "snooze",
        }
        page.get_by_role("button", name="Submit decisions").click()
        page.wait_for_load_state()
        assert page.get_by_text("Your decisions were recorded").is_visible()
        assert no_horizontal_scroll(page)
        page.screenshot(path=str(OUTPUT / "review-done-390px.png"))

        after = decisions(application)
        assert after[ids[0]] == ("confirmed", "web")
        assert after[ids[1]] == ("confirmed", "web")
        assert after[ids[2]] == ("kept", "web")
        assert after[ids[3]] == ("snoozed", "web")
        changed = {i for i in after if after[i] != before[i]}
        assert changed == set(ids)
        with application.store.session() as session:
            audited = [
                (e.entity_id, e.to_state, e.via)
                for e in session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.entity_id.in_(ids), AuditEntry.to_state != "pending")
                    .order_by(AuditEntry.entity_id)
                )
            ]
        assert audited == [
            (ids[0], "confirmed", Channel.WEB),
            (ids[1], "confirmed", Channel.WEB),
            (ids[2], "kept", Channel.WEB),
            (ids[3], "snoozed", Channel.WEB),
        ]

        # The same submit again, from the same browser (cookie and all): refused.
        replay = context.request.post(
            link, form={**form, f"d-{pending(application)[0].id}": "remove"}
        )
        assert replay.status == 409
        assert decisions(application) == after

        # A tampered link: a clear page, and nothing changes.
        token = link.rsplit("/", 1)[1]
        tampered = link[: -len(token)] + token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
        page.goto(tampered)
        assert page.get_by_role("heading", name="This link is not valid").is_visible()
        assert no_horizontal_scroll(page)
        forged = context.request.post(tampered, form=form)
        assert forged.status == 400
        assert decisions(application) == after
        context.close()
    finally:
        server.stop()
        site.close()


def test_a_stale_page_leaves_a_decision_made_in_the_terminal(
    home, tmp_path, browser: Browser
) -> None:
    site = make_site(tmp_path / "site", size=150)
    application = site.app()
    server = start(application)
    try:
        assert queue_digest(application, NOW)
        assert deliver_outbox(application, NOW) == 1
        (eml,) = (site.root / "outbox").glob("*.eml")
        text, _html = parts(parse(eml.read_bytes()))
        (link,) = set(review_links(text))
        ids = [s.id for s in pending(application)]
        context = browser.new_context(viewport=PHONE)
        page = context.new_page()
        page.goto(link)

        # The page stays open while `lopper snooze` runs in the terminal.
        until = NOW + timedelta(days=5)
        decide(application.store, [ids[0]], S.SNOOZED, via=Channel.CLI, now=NOW, until=until)
        page.get_by_label("Remove all").check()
        page.get_by_role("button", name="Submit decisions").click()
        page.wait_for_load_state()

        assert page.get_by_text("Your decisions were recorded").is_visible()
        assert page.get_by_text(f"#{ids[0]} not changed: decided elsewhere since").is_visible()
        after = decisions(application)
        assert after[ids[0]] == ("snoozed", "cli")
        assert {after[i] for i in ids[1:]} == {("confirmed", "web")}
        context.close()
    finally:
        server.stop()
        site.close()
