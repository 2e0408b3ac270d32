#!/usr/bin/env python3
"""The web console over HTTPS in headless Chromium, for tests/e2e/console.rs.

    console_tls.py ADMIN_URL TOKEN

Loads ADMIN_URL/ (an https:// URL whose certificate comes from a private
CA: Chromium is told to accept it, the CA's trust is tested elsewhere),
signs in with TOKEN, approves nothing, waits for two status polls and
prints one line "tls <json>": the protocol the page was loaded over, the
certificate line the console shows, a figure, and every SEVERE console
message.
"""
import json
import sys

import chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
    admin, token = sys.argv[1], sys.argv[2]
    driver = chromium.start("--ignore-certificate-errors", console_log=True)
    try:
        driver.get(admin + "/")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "token-dialog").is_displayed())
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "token-submit").click()
        updated = lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-updated") or 0)
        WebDriverWait(driver, 15).until(lambda d: updated(d) > 0)
        first = updated(driver)
        WebDriverWait(driver, 15).until(lambda d: updated(d) > first)
        protocol = driver.execute_script(
            "return performance.getEntriesByType('navigation')[0].nextHopProtocol")
        print("tls " + json.dumps({
            "protocol": protocol,
            "certificate": driver.find_element(By.ID, "admin-tls").text,
            "updates-approved": driver.find_element(By.ID, "updates-approved").get_attribute("data-value"),
            "errors": [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"],
        }), flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
