# SPDX-License-Identifier: MIT
"""browser.py: Debian's headless Chromium driven by chromedriver
(python3-selenium) for the tests of the pages: the sink's inbox and
sluiced's dashboard. One Chromium per test module (conftest.py's `browser`
fixture), with a fresh profile in the module's temporary directory, no
network but loopback, and nothing started in the background.

shot(path) saves a screenshot and fails if it is blank (one colour, or
nearly: a page that did not render)."""
import io
import os
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


class Browser:
    def __init__(self, profile_dir):
        os.makedirs(str(profile_dir), exist_ok=True)
        o = Options()
        for f in FLAGS:
            o.add_argument(f)
        o.add_argument("--user-data-dir=" + str(profile_dir))
        o.binary_location = CHROMIUM
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        log = os.path.join(str(profile_dir), "chromedriver.log")
        self.d = webdriver.Chrome(service=Service(CHROMEDRIVER, log_path=log),
                                  options=o)
        self.d.set_page_load_timeout(30)
        self.d.set_script_timeout(30)

    def quit(self):
        self.d.quit()

    def get(self, url):
        self.d.get(url)

    def css(self, sel):
        return self.d.find_elements(By.CSS_SELECTOR, sel)

    def one(self, sel):
        return self.d.find_element(By.CSS_SELECTOR, sel)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def wait(self, pred, timeout=20, what="condition"):
        """Poll pred() (a function of nothing) until it is true."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                v = pred()
                if v:
                    return v
            except Exception as e:     # the page is changing under us
                last = e
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s (%r)" % (what, last))

    def texts(self, sel):
        """The text of every element that matches sel, read at once (a
        page that redraws between two reads cannot make one stale)."""
        return self.js("return Array.from(document.querySelectorAll("
                       "arguments[0])).map(e => e.innerText)", sel)

    def cells(self, table):
        """The rows of a table's body as lists of cell texts, at once."""
        return self.js("return Array.from(document.querySelectorAll("
                       "arguments[0] + ' tbody tr')).map(tr => "
                       "Array.from(tr.cells).map(td => td.innerText))", table)

    def click_text(self, sel, text):
        """Click the element matching sel whose text is text, at once."""
        ok = self.js("const e = Array.from(document.querySelectorAll("
                     "arguments[0])).find(e => e.innerText === arguments[1]);"
                     "if (e) e.click(); return !!e", sel, text)
        assert ok, "no %s reading %r" % (sel, text)

    def shot(self, path):
        """Save a screenshot to path; fail if it is blank."""
        from PIL import Image
        png = self.d.get_screenshot_as_png()
        with open(path, "wb") as f:
            f.write(png)
        img = Image.open(io.BytesIO(png)).convert("RGB")
        colors = img.getcolors(maxcolors=1 << 16)
        if colors is not None:
            total = img.width * img.height
            top = max(c for c, _ in colors)
            assert len(colors) > 8 and top < 0.98 * total, \
                "%s is blank: %d colours, the commonest on %.1f%%" % (
                    path, len(colors), 100.0 * top / total)
        return path

    def phone_shot(self, path, table):
        """In a phone-sized window (390 x 844): wait until the table
        (a CSS selector) shows as cards (its header moved off screen),
        save a screenshot to path; then back to the usual size."""
        self.d.set_window_size(390, 844)
        try:
            self.wait(lambda: self.one(table + " thead").location["x"] < 0,
                      what="cards")
            self.shot(path)
        finally:
            self.d.set_window_size(1280, 900)

    def unlabelled(self):
        """The ids of form controls without a label."""
        return self.js("""return Array.from(document.querySelectorAll(
            'input, select, textarea')).filter(e => !e.labels.length &&
            !e.getAttribute('aria-label')).map(e => e.id)""")

    def console_errors(self):
        return [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]
