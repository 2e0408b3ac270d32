#!/usr/bin/env python3
"""Drives the console's fleet pages in headless Chromium, for
tests/e2e/fleet_console.rs.

    fleet_console.py ADMIN_URL UPDATE_ID GROUP SEARCH SHOTS_DIR

Steps, each reported on stdout as one line "<step> <json>":
  1. opens ADMIN_URL/#computers and reports the rows of the Computers page
     ("computers" [{id, name, groups, stale}]); then with the group filter
     set to GROUP ("in_group" [ids]), the search box holding SEARCH
     ("searched" [ids]), and the status filter on failed ("failed" [ids]);
  2. opens the overview, searches UPDATE_ID, clicks its Status button and
     reports each group's bar ("bars" {group: {state: count}, ...});
     clicks "Approve for GROUP" and waits for the bars to come back
     ("approved" {group: data-approved});
  3. opens #attention and reports its three lists ("attention"
     {failed: [ids], stale: [ids], unapproved: [[update id, needed]]});
  4. prints "console [...]" with every console message of level SEVERE.

With SHOTS_DIR other than "-", a screenshot of each page goes there:
computers.png, update-status.png (after the approval), attention.png.
"""
import json
import os
import sys

from urllib.parse import urlencode

import chromium
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait


def report(step, value):
    print(step + " " + json.dumps(value), flush=True)


def body(driver, attribute):
    return driver.find_element(By.TAG_NAME, "body").get_attribute(attribute) or ""


def computer_rows(driver, tbody):
    rows = driver.find_elements(By.CSS_SELECTOR, "#" + tbody + " tr[data-computer-id]")
    return [r.get_attribute("data-computer-id") for r in rows]


def searched(driver, action, query):
    """Runs `action` and waits for the computers list of `query` (the
    page's own parameters, in its order)."""
    want = urlencode([("limit", "200")] + query)
    action()
    WebDriverWait(driver, 15).until(lambda d: body(d, "data-computers-searched") == want)


def shot(driver, shots, name):
    if shots != "-":
        driver.save_screenshot(os.path.join(shots, name))


def bars(driver, update_id):
    row = driver.find_element(By.CSS_SELECTOR, 'tr.status-row[data-status-of="%s"]' % update_id)
    out, approved = {}, {}
    for g in row.find_elements(By.CSS_SELECTOR, "tr[data-group]"):
        name = g.get_attribute("data-group")
        out[name] = {s.get_attribute("data-state"): int(s.get_attribute("data-count"))
                     for s in g.find_elements(By.CSS_SELECTOR, ".bar > span")}
        approved[name] = g.get_attribute("data-approved") == "true"
    return out, approved


def main():
    admin, update_id, group, search, shots = sys.argv[1:6]
    driver = chromium.start("--window-size=1360,900", console_log=True)
    try:
        driver.get(admin + "/#computers")
        WebDriverWait(driver, 15).until(lambda d: body(d, "data-computers-searched") != "")
        WebDriverWait(driver, 15).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#computer-group option")) > 1)
        rows = []
        for r in driver.find_elements(By.CSS_SELECTOR, "#computers tr[data-computer-id]"):
            cells = r.find_elements(By.TAG_NAME, "td")
            rows.append({"id": r.get_attribute("data-computer-id"), "name": cells[0].text,
                         "groups": cells[1].text, "stale": r.get_attribute("data-stale") == "true"})
        report("computers", rows)
        shot(driver, shots, "computers.png")

        group_filter = Select(driver.find_element(By.ID, "computer-group"))
        searched(driver, lambda: group_filter.select_by_value(group), [("group", group)])
        report("in_group", computer_rows(driver, "computers"))
        searched(driver, lambda: group_filter.select_by_value(""), [])
        box = driver.find_element(By.ID, "computer-search")
        searched(driver, lambda: box.send_keys(search), [("q", search)])
        report("searched", computer_rows(driver, "computers"))
        # Emptied with the keyboard: an input event, as a person does it.
        searched(driver, lambda: box.send_keys(Keys.BACKSPACE * len(search)), [])
        status_filter = Select(driver.find_element(By.ID, "computer-status"))
        searched(driver, lambda: status_filter.select_by_value("failed"), [("status", "failed")])
        report("failed", computer_rows(driver, "computers"))

        driver.get(admin + "/#overview")
        driver.find_element(By.ID, "update-search").send_keys(update_id)
        WebDriverWait(driver, 15).until(lambda d: body(d, "data-searched") == update_id)
        row = WebDriverWait(driver, 15).until(
            lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-update-id="%s"]' % update_id))
        row.find_element(By.NAME, "status").click()
        WebDriverWait(driver, 15).until(lambda d: d.find_elements(
            By.CSS_SELECTOR, 'tr.status-row[data-status-of="%s"][data-loaded]' % update_id))
        states, _ = bars(driver, update_id)
        report("bars", states)
        status_row = driver.find_element(By.CSS_SELECTOR, 'tr.status-row[data-status-of="%s"]' % update_id)
        loaded = status_row.get_attribute("data-loaded")
        status_row.find_element(By.CSS_SELECTOR, 'button[name=approve-group][data-group="%s"]' % group).click()
        WebDriverWait(driver, 15, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: d.find_element(By.CSS_SELECTOR, 'tr.status-row[data-status-of="%s"]' % update_id)
            .get_attribute("data-loaded") != loaded)
        _, approved = bars(driver, update_id)
        report("approved", approved)
        status_row = driver.find_element(By.CSS_SELECTOR, 'tr.status-row[data-status-of="%s"]' % update_id)
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", status_row)
        shot(driver, shots, "update-status.png")

        driver.get(admin + "/#attention")
        WebDriverWait(driver, 15).until(lambda d: body(d, "data-attention-loaded") != "")
        unapproved = [[r.get_attribute("data-update-id"), int(r.get_attribute("data-needed"))]
                      for r in driver.find_elements(By.CSS_SELECTOR, "#attention-unapproved tr[data-update-id]")]
        report("attention", {"failed": computer_rows(driver, "attention-failed"),
                             "stale": computer_rows(driver, "attention-stale"),
                             "unapproved": unapproved})
        shot(driver, shots, "attention.png")

        severe = [m["message"] for m in driver.get_log("browser") if m["level"] == "SEVERE"]
        report("console", severe)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
