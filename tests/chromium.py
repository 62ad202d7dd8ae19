"""Headless Chromium for the browser tests (Debian's chromium and chromium-driver)."""

import os
import shutil

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def require_chromium() -> None:
    """Skip the calling test module where Chromium is missing, except in CI, which installs it."""
    if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium and chromium-driver (CI installs them)", allow_module_level=True)


def start_browser():
    """A headless Chromium at 1280 x 1000 CSS pixels, one device pixel each, keeping the console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from generator.page_weights import chromium_options

    options = chromium_options(CHROMIUM, 1280, 1000)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
