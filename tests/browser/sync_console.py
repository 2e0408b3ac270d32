#!/usr/bin/env python3
"""Drives the console's Synchronization card in headless Chromium, for
tests/e2e/console.rs.

    sync_console.py ADMIN_URL PRODUCT_ID CLASSIFICATION_ID

Steps, each reported on stdout as one line "<step> <json>":
  1. loads ADMIN_URL/ and waits for the card to show the last sync (the
     test ran one, categories only): "last {...}";
  2. reads the product and classification checkboxes: "choices {...}";
  3. ticks PRODUCT_ID, then CLASSIFICATION_ID, each saved by a PUT as it
     is ticked: "saved N" (the number selected after the second);
  4. clicks "Sync now" and waits for the card to show that sync's end:
     "synced {...}";
  5. prints "console [...]" with every console message of level SEVERE.
"""
import json
import sys

import chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def report(step, value):
    print(step + " " + json.dumps(value), flush=True)


def attr(driver, id, name):
    return driver.find_element(By.ID, id).get_attribute(name)


def main():
    admin, product, classification = sys.argv[1], sys.argv[2], sys.argv[3]
    driver = chromium.start(console_log=True)
    try:
        driver.get(admin + "/")
        WebDriverWait(driver, 15).until(lambda d: attr(d, "sync-last", "data-complete"))
        report("last", {
            "complete": attr(driver, "sync-last", "data-complete"),
            "documents": attr(driver, "sync-last", "data-documents"),
            "state": attr(driver, "sync-state", "data-state"),
            "next": driver.find_element(By.ID, "sync-next").text,
        })

        WebDriverWait(driver, 15).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#sync-classifications input"))
        titles = lambda box: [i.get_attribute("data-title")
                              for i in driver.find_elements(By.CSS_SELECTOR, box + " input")]
        report("choices", {"products": titles("#sync-products"),
                           "classifications": titles("#sync-classifications")})

        for n, value in enumerate([product, classification], start=1):
            box = f'.choices input[value="{value}"]'
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, box).is_enabled())
            driver.find_element(By.CSS_SELECTOR, box).click()
            WebDriverWait(driver, 10).until(
                lambda d: attr(d, "categories-result", "data-saved") == str(n))
        report("saved", int(attr(driver, "categories-result", "data-saved")))

        before = attr(driver, "sync-last", "data-documents")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "sync-now").is_enabled())
        driver.find_element(By.ID, "sync-now").click()
        WebDriverWait(driver, 30).until(
            lambda d: attr(d, "sync-state", "data-state") == "idle"
            and attr(d, "sync-last", "data-documents") != before)
        report("synced", {
            "complete": attr(driver, "sync-last", "data-complete"),
            "documents": attr(driver, "sync-last", "data-documents"),
            "errors": attr(driver, "sync-errors", "data-count"),
            "text": driver.find_element(By.ID, "sync-last").text,
        })
        report("console", [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"])
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
