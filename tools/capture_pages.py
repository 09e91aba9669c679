"""Take the documentation's pictures of the digest and the review page from the real pages.

A sandbox network is synced and evaluated, a digest is written to a file, and the review
page is served; Debian's Chromium (through Playwright, as the browser tests drive it) then
photographs the digest on a phone, and the review page on a desktop and on a phone. The
pictures are JPEG, small enough for the repository (docs/images/).

    python tools/capture_pages.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def main() -> int:
    if not CHROMIUM.exists():
        print("Debian's Chromium is needed: apt-get install chromium", file=sys.stderr)
        return 1
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from digest_site import make_site, review_links
    from helpers import NOW
    from playwright.sync_api import sync_playwright

    from service.digest import deliver_outbox, queue_digest
    from service.logs import configure_logging
    from service.web import start

    configure_logging(json=False, level="WARNING")

    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        os.environ.update(XDG_CONFIG_HOME=f"{home}/config", XDG_STATE_HOME=f"{home}/state")
        site = make_site(Path(home) / "site", size=400)
        application = site.app()
        server = start(application)
        try:
            queue_digest(application, NOW)
            deliver_outbox(application, NOW)
            (eml,) = (site.root / "outbox").glob("*.eml")
            from digest_site import parse, parts

            _text, html = parts(parse(eml.read_bytes()))
            digest = site.root / "digest.html"
            digest.write_text(html, encoding="utf-8")
            (link,) = set(review_links(html))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
                shots = (
                    ("digest-phone.jpg", PHONE, digest.as_uri()),
                    ("review-desktop.jpg", DESKTOP, link),
                    ("review-phone.jpg", PHONE, link),
                )
                for name, viewport, url in shots:
                    page = browser.new_context(viewport=viewport).new_page()
                    page.goto(url)
                    page.screenshot(path=str(IMAGES / name), type="jpeg", quality=70)
                    print(f"docs/images/{name}: {(IMAGES / name).stat().st_size:,} bytes")
                browser.close()
        finally:
            server.stop()
            site.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
