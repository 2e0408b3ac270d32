#!/usr/bin/env python3
"""Opens a hostile page in headless Chromium and lets it attack the admin API.

Driven by tests/e2e/browser.rs, which serves the page on another loopback
port and checks afterwards that nothing changed. Usage:

    hostile_page.py PAGE_URL REBOUND_URL

PAGE_URL is the hostile page; it sets document.title to "done" once its
attacks have been sent. REBOUND_URL is an admin API URL under a name that
--host-resolver-rules maps to 127.0.0.1 (what DNS rebinding amounts to).
Prints "console: ..." lines for the page's console errors and
"rebound: <body>" for what the browser got from REBOUND_URL.
"""
import sys
import time

import chromium
from selenium.webdriver.support.ui import WebDriverWait


def main():
    page, rebound = sys.argv[1], sys.argv[2]
    driver = chromium.start("--disable-quic", "--host-resolver-rules=MAP rebound.test 127.0.0.1")
    try:
        driver.get(page)
        WebDriverWait(driver, 20).until(lambda d: d.title == "done")
        time.sleep(1.0)  # let the form posts in their iframes land
        driver.get(rebound)
        print("rebound: " + driver.find_element("tag name", "body").text.replace("\n", " "))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
