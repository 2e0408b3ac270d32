"""Headless Chromium through ChromeDriver, as every browser test starts it
(Debian's chromium and chromium-driver, Selenium from PyPI)."""
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start(*extra_flags, console_log=False):
    """A driver with a 20 s page-load timeout; `console_log`: the page's
    console messages are kept for `driver.get_log("browser")`."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS + list(extra_flags):
        options.add_argument(flag)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(20)
    return driver
