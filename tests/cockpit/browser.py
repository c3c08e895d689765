#!/usr/bin/python3
"""One scenario of apt-ostree's Cockpit page in headless Chromium.

    browser.py URL USER PASSWORD SCENARIO SCREENSHOT

Logs into Cockpit at URL as USER (with administrative access when
SCENARIO starts with "admin"), opens the page, plays SCENARIO and prints
what the page showed as one JSON object; tests/cockpit.rs compares it with
the sysroot. Debian's /usr/bin/python3 (python3-selenium), not another.

Scenarios:
  admin-rollback  the deployments, then "Roll back", then the deployments;
                  "Pin" the second, "Pin" the first and "Unpin" it again
  user-rollback   the deployments, then "Roll back" as a user without
                  administrative access
  admin-check     "Check for updates" (the test made the remote unreachable)
  admin-changes   "Check for updates" (the update's package diff), "Download",
                  "Update and reboot" (Cockpit's restart dialog: 5 minutes,
                  a message, "Restart"), "Rebase to" ARG, "Update" (nothing
                  new), "Clean up"
  admin-attach    a transaction the CLI started shows on opening the page,
                  with its progress; "Cancel"
  admin-packages  "Search packages" ARG; "Install" the first result;
                  "Uninstall" it
  admin-load      load the page ARG times more (the benchmark): the
                  milliseconds from each load's start to the deployments
                  shown, as the page measures them (body's data-shown-ms)
"""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def login(driver, wait, url, user, password, admin):
    driver.get(url)
    wait.until(EC.visibility_of_element_located((By.ID, "login-user-input"))).send_keys(user)
    if admin:
        # The login page asks for administrative access (sudo) when this is set.
        driver.execute_script("localStorage.setItem(arguments[0], 'any')", "superuser:" + user)
    driver.find_element(By.ID, "login-password-input").send_keys(password)
    driver.find_element(By.ID, "login-button").click()


def loaded(driver, wait):
    """Waits for the page's first status; the milliseconds it took."""
    started = time.monotonic()
    wait.until(lambda d: d.execute_script(
        "return document.body && document.body.dataset.loaded") in ("true", "error"))
    return round((time.monotonic() - started) * 1000)


def deployments(driver):
    # Read in one script, once the page shows its status: the page may
    # redraw the list (or Cockpit reload the page) between two reads.
    return WebDriverWait(driver, 30).until(lambda d: d.execute_script("""
        if (document.body.dataset.loaded !== "true")
            return null;
        return { list: Array.from(document.querySelectorAll("#deployments > li.deployment")).map(item => ({
            checksum: item.dataset.checksum,
            badges: Array.from(item.querySelectorAll("[data-badge]")).map(b => b.dataset.badge),
            text: item.innerText,
        })) };"""))["list"]


def click_and_wait(driver, wait, button):
    driver.find_element(By.ID, button).click()
    wait.until(lambda d: d.execute_script(
        "return document.body.dataset.transaction") == "done")
    # The page reloads the status after a transaction.
    wait.until(lambda d: d.execute_script("return document.body.dataset.loaded") == "true")


def changes(driver, wait, rebase_to, report):
    click_and_wait(driver, wait, "check-button")
    box = driver.find_element(By.ID, "update-available")
    report["update"] = {"shown": box.is_displayed(), "summary": box.text,
                        "changes": [li.text for li in box.find_elements(By.CSS_SELECTOR, "li.change")]}
    click_and_wait(driver, wait, "download-button")
    report["after_download"] = deployments(driver)
    report["download_notice"] = driver.find_element(By.ID, "notice").text
    click_and_wait(driver, wait, "reboot-button")
    report["after_update"] = deployments(driver)
    report["restart"] = restart_dialog(driver, wait)
    driver.find_element(By.ID, "rebase-input").send_keys(rebase_to)
    click_and_wait(driver, wait, "rebase-button")
    report["after_rebase"] = deployments(driver)
    click_and_wait(driver, wait, "update-button")
    report["update_notice"] = driver.find_element(By.ID, "notice").text
    click_and_wait(driver, wait, "cleanup-button")
    report["cleanup_notice"] = driver.find_element(By.ID, "notice").text


def restart_dialog(driver, wait):
    wait.until(lambda d: d.execute_script("return document.getElementById('restart-dialog').open"))
    shown = driver.find_element(By.ID, "restart-dialog").text
    Select(driver.find_element(By.ID, "restart-delay")).select_by_value("+5")
    driver.find_element(By.ID, "restart-message").send_keys("apt-ostree update")
    driver.find_element(By.ID, "restart-confirm").click()
    wait.until(lambda d: d.execute_script("""
        return !document.getElementById('restart-dialog').open
            || !document.getElementById('restart-error').hidden"""))
    return {"text": shown, "error": driver.find_element(By.ID, "restart-error").text,
            "notice": driver.find_element(By.ID, "notice").text}


def pin(driver, wait, index):
    """Clicks the Pin (or Unpin) button of the deployment at INDEX."""
    driver.execute_script("document.body.dataset.transaction = ''")
    driver.find_element(
        By.CSS_SELECTOR, f'li.deployment[data-index="{index}"] button.pin-button').click()
    wait.until(lambda d: d.execute_script("return document.body.dataset.transaction") == "done")
    wait.until(lambda d: d.execute_script("return document.body.dataset.loaded") == "true")
    return deployments(driver)


def attach(driver, wait, report):
    # The page found the transaction and follows it.
    wait.until(lambda d: d.find_element(By.ID, "transaction").is_displayed())
    report["attached_title"] = driver.find_element(By.ID, "transaction-title").text
    wait.until(lambda d: d.find_element(By.ID, "transaction-task").text
               or d.find_element(By.ID, "transaction-log").text)
    report["attached_task"] = driver.find_element(By.ID, "transaction-task").text
    driver.find_element(By.ID, "cancel-button").click()
    wait.until(lambda d: d.execute_script(
        "return document.body.dataset.transaction") == "done")


def packages(driver, wait, words, report):
    driver.find_element(By.ID, "search-input").send_keys(words)
    driver.find_element(By.ID, "search-button").click()
    wait.until(lambda d: d.execute_script("return document.body.dataset.search") == "done")
    results = driver.find_elements(By.CSS_SELECTOR, "#search-results li.result")
    report["found"] = [r.get_attribute("data-package") for r in results]
    first = report["found"][0]
    driver.find_element(By.CSS_SELECTOR, f'button.install-result[data-package="{first}"]').click()
    wait.until(lambda d: d.execute_script("return document.body.dataset.transaction") == "done")
    wait.until(lambda d: d.execute_script("return document.body.dataset.loaded") == "true")
    report["after_install"] = deployments(driver)
    driver.find_element(By.CSS_SELECTOR, f'button.uninstall-button[data-package="{first}"]').click()
    # A second transaction: wait for it to start, then to end.
    wait.until(lambda d: d.find_element(By.ID, "transaction-title").text.startswith("Uninstall"))
    wait.until(lambda d: d.execute_script("return document.body.dataset.transaction") == "done")
    wait.until(lambda d: d.execute_script("return document.body.dataset.loaded") == "true")
    report["after_uninstall"] = deployments(driver)


def reload(driver, wait, url, times):
    shown = []
    for _ in range(times):
        driver.get(url)
        wait.until(lambda d: d.execute_script("return document.body && document.body.dataset.loaded") == "true")
        shown.append(driver.execute_script("return Number(document.body.dataset.shownMs)"))
    return shown


def error_text(driver):
    return driver.execute_script("""
        const box = document.getElementById("error");
        return { shown: !box.hidden, text: box.hidden ? "" : box.innerText,
                 name: box.dataset.error || "" };""")


def main():
    url, user, password, scenario, screenshot = sys.argv[1:6]
    argument = sys.argv[6] if len(sys.argv) > 6 else ""
    driver = browser()
    wait = WebDriverWait(driver, 60)
    report = {}
    try:
        login(driver, wait, url, user, password, scenario.startswith("admin"))
        report["load_ms"] = loaded(driver, wait)
        # From the page's own start to the deployments shown (one GetStatus).
        report["page_ms"] = driver.execute_script("return Number(document.body.dataset.shownMs)")
        if scenario == "admin-load":
            report["loads_ms"] = reload(driver, wait, url, int(argument))
            return
        report["before"] = deployments(driver)
        if scenario.endswith("rollback"):
            click_and_wait(driver, wait, "rollback-button")
            report["after"] = deployments(driver)
            if scenario == "admin-rollback":
                report["pinned"] = [pin(driver, wait, 1), pin(driver, wait, 0), pin(driver, wait, 0)]
        elif scenario == "admin-check":
            click_and_wait(driver, wait, "check-button")
        elif scenario == "admin-changes":
            changes(driver, wait, argument, report)
        elif scenario == "admin-attach":
            attach(driver, wait, report)
        elif scenario == "admin-packages":
            packages(driver, wait, argument, report)
        report["error"] = error_text(driver)
        report["log"] = driver.find_element(By.ID, "transaction-log").text
        report["notice"] = driver.find_element(By.ID, "notice").text
    finally:
        driver.save_screenshot(screenshot)
        driver.quit()
        print(json.dumps(report))


if __name__ == "__main__":
    main()
