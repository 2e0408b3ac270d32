#!/usr/bin/env python3
"""Drives the web console in headless Chromium, for tests/e2e/console.rs.

    console.py ADMIN_URL SEARCH UPDATE_ID [TOKEN]

Steps, each reported on stdout as one line "<step> <json>":
  1. loads ADMIN_URL/ (entering TOKEN in the console's dialog if given),
     waits for the first status poll and prints "figures" with the
     data-value of each figure element;
  2. waits for a line on stdin (the test has started a slow download),
     counts the progress bars that are children of #downloads ("bars N")
     and samples the first: "progress [values]";
  3. types SEARCH into #update-search, clicks Approve in the row of
     UPDATE_ID and waits for the row to say approved: "approved <state>";
  4. reloads and reports whether the token dialog showed again:
     "reload {"dialog_hidden": ..., "figures": ...}";
  5. waits for a line on stdin (the test has made a stored file unneeded),
     clicks "Find unneeded files": "unneeded N"; clicks the removal it
     offers: "removed N"; clicks "Scrub the store" and waits for the end:
     "scrub {"state": ..., "bad": ...}";
  6. prints "console [...]" with every console message of level SEVERE.
"""
import json
import sys
import time

import chromium
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

FIGURES = ["hit-ratio", "bytes-served", "bytes-upstream", "store-bytes", "updates-approved", "do-objects"]


def report(step, value):
    print(step + " " + json.dumps(value), flush=True)


def figures(driver):
    return {f: driver.find_element(By.ID, f).get_attribute("data-value") for f in FIGURES}


def sign_in_if_asked(driver, token):
    if token is None:
        return
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "token-dialog").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "token-submit").click()


def wait_for_poll(driver, after=0):
    WebDriverWait(driver, 15).until(
        lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-updated") or 0) > after
    )
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-updated"))


def main():
    admin, search, update_id = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    driver = chromium.start(console_log=True)
    try:
        driver.get(admin + "/")
        sign_in_if_asked(driver, token)
        polled = wait_for_poll(driver)
        # The poll after this one reads the same figures (nothing moves).
        polled = wait_for_poll(driver, polled)
        report("figures", figures(driver))

        sys.stdin.readline()
        bar = WebDriverWait(driver, 15).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#downloads > progress"))[0]
        report("bars", len(driver.find_elements(By.CSS_SELECTOR, "#downloads > progress")))
        samples = []
        for _ in range(6):
            try:
                samples.append(float(bar.get_attribute("value") or 0))
            except Exception:  # replaced by the next poll: take the new one
                bars = driver.find_elements(By.CSS_SELECTOR, "#downloads > progress")
                if not bars:
                    break
                bar = bars[0]
                samples.append(float(bar.get_attribute("value") or 0))
            time.sleep(0.6)
        report("progress", samples)

        box = driver.find_element(By.ID, "update-search")
        box.clear()
        box.send_keys(search)
        # Typing searches as it goes: wait for the search of the whole text,
        # so the row clicked is not replaced by a later result.
        WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-searched") == search)
        row = f'tr[data-update-id="{update_id}"]'
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        driver.find_element(By.CSS_SELECTOR, row + ' button[name="approve"]').click()

        def approved(d):
            try:
                return d.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "approved"
            except StaleElementReferenceException:
                return False  # re-rendered between find and read: look again

        WebDriverWait(driver, 10).until(approved)
        report("approved", driver.find_element(By.CSS_SELECTOR, row).get_attribute("data-state"))

        driver.refresh()
        wait_for_poll(driver)
        report("reload", {
            "dialog_hidden": not driver.find_element(By.ID, "token-dialog").is_displayed(),
            "figures": figures(driver),
        })
        sys.stdin.readline()
        driver.find_element(By.ID, "cleanup-find").click()
        result = WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.ID, "cleanup-result").get_attribute("data-files"))
        report("unneeded", int(result))
        remove = driver.find_element(By.ID, "cleanup-remove")
        WebDriverWait(driver, 10).until(lambda d: remove.is_displayed())
        remove.click()
        removed = WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.ID, "cleanup-result").get_attribute("data-removed"))
        report("removed", int(removed))
        driver.find_element(By.ID, "scrub-start").click()
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.ID, "scrub-state").get_attribute("data-state") == "done")
        state = driver.find_element(By.ID, "scrub-state")
        report("scrub", {"state": state.get_attribute("data-state"), "bad": int(state.get_attribute("data-bad"))})
        report("console", [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"])
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
