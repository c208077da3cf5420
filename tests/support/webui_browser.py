#!/usr/bin/env python3
"""Drives serve's web UI in headless Chromium (Debian's chromium and chromium-driver, through
selenium from the virtual environment scripts/test.sh makes), for tests/webui.rs.

    webui_browser.py URL OUT_DIR SCENARIO_JSON

The scenario (JSON) says what to check; each step's findings are printed as one JSON object
on stdout at the end ({"ok": true, ...} or {"ok": false, "error": ...}), screenshots go to
OUT_DIR. Every wait is bounded; SIGALRM ends a run that takes too long, and the browser and
its driver are quit in every case. Nothing here reaches beyond the URL given: the browser
starts with its background networking, updates and sync off.
"""

import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
import zlib

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 20


def png_pixels(data):
    """Width, height and the rows of RGB(A) bytes of a non-interlaced 8-bit PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = ihdr
    assert depth == 8 and colour in (2, 6) and interlace == 0, ihdr
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def screenshot(driver, out, name):
    """Takes a screenshot, saves it, and measures it: not blank means many colours and a
    spread of brightness."""
    data = driver.get_screenshot_as_png()
    path = os.path.join(out, name + ".png")
    with open(path, "wb") as f:
        f.write(data)
    width, height, bpp, rows = png_pixels(data)
    lum, colours, accent = [], set(), 0
    for y in range(0, height, 2):
        row = rows[y]
        for x in range(0, width, 2):
            r, g, b = row[x * bpp], row[x * bpp + 1], row[x * bpp + 2]
            colours.add((r, g, b))
            # The UI's selection and active-filter background, --accent-soft (light theme).
            accent += (r, g, b) == (0xdc, 0xeb, 0xfb)
            lum.append(0.299 * r + 0.587 * g + 0.114 * b)
    mean = sum(lum) / len(lum)
    variance = sum((v - mean) ** 2 for v in lum) / len(lum)
    return {"path": path, "width": width, "height": height, "variance": round(variance, 1),
            "colours": len(colours), "accent_pixels": accent, "bytes": len(data)}


def wait(driver, what, condition, timeout=WAIT):
    try:
        # The detail pane is redrawn after each update: an element found a moment ago may
        # be gone; the condition is then asked again.
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=[StaleElementReferenceException]).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}")


def rows(driver):
    """The rows in view: hash -> (name, state text, state)."""
    return driver.execute_script(
        """const out = {};
        for (const r of document.querySelectorAll('#list-body .row[data-hash]')) {
          if (r.hidden || !r.dataset.hash) continue;
          out[r.dataset.hash] = [r.querySelector('.c-name').textContent,
                                 r.querySelector('.c-state').textContent, r.dataset.state];
        }
        return out;""")


def names_shown(driver):
    return {v[0] for v in rows(driver).values()}


def start():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    profile = tempfile.mkdtemp(prefix="rt-webui-chromium-")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-extensions",
                "--disable-domain-reliability", "--disable-client-side-phishing-detection",
                "--metrics-recording-only", "--no-pings", "--disable-dev-shm-usage",
                "--force-color-profile=srgb", "--hide-scrollbars"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.profile = profile
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def run_list(driver, url, out, s, found):
    driver.get(url)
    wait(driver, "the list", lambda d: d.execute_script("return document.body.dataset.view") == "app")
    expected = set(s["names"])
    wait(driver, f"rows {sorted(expected)}", lambda d: expected <= names_shown(d))
    # A mark on the page: still there at the end means nothing reloaded it.
    driver.execute_script("window.__notReloaded = 42;")
    found["list"] = screenshot(driver, out, "1-list")
    found["list_rows"] = sorted(names_shown(driver))
    # The API is open: there is nothing to log out of.
    wait(driver, "the log-out button hidden", lambda d: not d.find_element(By.ID, "btn-logout").is_displayed())
    found["logout_shown"] = driver.find_element(By.ID, "btn-logout").is_displayed()

    # Add a .torrent file and a magnet link through the add dialog.
    driver.find_element(By.ID, "btn-add").click()
    form = driver.find_element(By.ID, "add-form")
    wait(driver, "the add dialog", lambda d: form.is_displayed())
    form.find_element(By.NAME, "urls").send_keys(s["magnet"])
    form.find_element(By.NAME, "torrents").send_keys(s["file"])
    if s.get("category"):
        form.find_element(By.CSS_SELECTOR, f"select[name=category] option[value='{s['category']}']").click()
    found["add_dialog"] = screenshot(driver, out, "2-add-dialog")
    driver.find_element(By.ID, "add-submit").click()
    wait(driver, "the add dialog to close", lambda d: not form.is_displayed())
    added = set(s["added_names"])
    wait(driver, f"added rows {sorted(added)}", lambda d: added <= names_shown(d))
    found["after_add_rows"] = sorted(names_shown(driver))
    cat_of = driver.execute_script(
        "return [...document.querySelectorAll('#list-body .row[data-hash]')]"
        ".filter(r => !r.hidden && r.dataset.hash === arguments[0])"
        ".map(r => r.querySelector('.c-category').textContent)[0] || null;", s["file_hash"])
    found["added_category"] = cat_of

    # Stop one: select its row, press Stop, see it stopped.
    target = s["stop_hash"]
    row = driver.find_element(By.CSS_SELECTOR, f"#list-body .row[data-hash='{target}']")
    row.click()
    driver.find_element(By.ID, "btn-stop").click()
    wait(driver, "the stopped state", lambda d: rows(d).get(target, ["", ""])[1] == "Stopped")
    found["stopped_row"] = rows(driver)[target]
    found["stopped"] = screenshot(driver, out, "3-stopped")

    # The detail of the focused torrent: its files (with a priority control), trackers and
    # pieces.
    driver.find_element(By.CSS_SELECTOR, "#tabs [data-tab=files]").click()
    wait(driver, "the files tab", lambda d: d.find_elements(By.CSS_SELECTOR, "#tab-body select[data-index]"))
    found["files"] = wait(driver, "the file names", lambda d: [
        e.text for e in d.find_elements(By.CSS_SELECTOR, "#tab-body tbody td:first-child")])
    # Its first file skipped through the priority control.
    def skip_first_file(d):
        d.find_element(By.CSS_SELECTOR, "#tab-body select[data-index='0'] option[value='0']").click()
        return True
    wait(driver, "the first file's priority control", skip_first_file)
    wait(driver, "the priority to show as skip", lambda d: d.find_element(
        By.CSS_SELECTOR, "#tab-body select[data-index='0']").get_attribute("value") == "0"
        and not d.execute_script("return document.activeElement && document.activeElement.matches('#tab-body select')"))
    found["file_priority"] = wait(driver, "the priority", lambda d: d.find_element(
        By.CSS_SELECTOR, "#tab-body select[data-index='0']").get_attribute("value"))
    driver.find_element(By.CSS_SELECTOR, "#tabs [data-tab=pieces]").click()
    wait(driver, "the pieces tab", lambda d: d.find_elements(By.CSS_SELECTOR, "#tab-body canvas.pieces"))
    found["pieces_caption"] = wait(driver, "the pieces caption",
                                   lambda d: d.find_element(By.CSS_SELECTOR, "#tab-body p").text)

    # Delete one with its data: its row goes.
    gone = s["delete_hash"]
    driver.find_element(By.CSS_SELECTOR, f"#list-body .row[data-hash='{gone}']").click()
    driver.find_element(By.ID, "btn-delete").click()
    dialog = driver.find_element(By.ID, "dlg-delete")
    wait(driver, "the delete dialog", lambda d: dialog.is_displayed())
    found["delete_question"] = dialog.find_element(By.CSS_SELECTOR, ".what").text
    dialog.find_element(By.NAME, "files").click()
    driver.find_element(By.ID, "delete-submit").click()
    wait(driver, "the deleted row to go", lambda d: gone not in rows(d))
    found["after_delete_rows"] = sorted(names_shown(driver))
    found["not_reloaded"] = driver.execute_script("return window.__notReloaded === 42;")
    found["console_errors"] = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def run_login(driver, url, out, s, found):
    driver.get(url)
    wait(driver, "the login page", lambda d: d.execute_script("return document.body.dataset.view") == "login")
    found["login"] = screenshot(driver, out, "4-login")
    found["key_form_shown"] = driver.find_element(By.ID, "key-form").is_displayed()
    form = driver.find_element(By.ID, "login-form")
    form.find_element(By.NAME, "username").send_keys(s["username"])
    form.find_element(By.NAME, "password").send_keys("wrong password")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "the refusal", lambda d: d.find_element(By.ID, "login-error").text)
    found["refused"] = driver.find_element(By.ID, "login-error").text
    pw = form.find_element(By.NAME, "password")
    pw.clear()
    pw.send_keys(s["password"])
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    expected = set(s["names"])
    wait(driver, f"rows {sorted(expected)} after the login", lambda d: expected <= names_shown(d))
    found["after_login_rows"] = sorted(names_shown(driver))
    found["logged_in"] = screenshot(driver, out, "5-logged-in")
    driver.find_element(By.ID, "btn-logout").click()
    wait(driver, "the login page after logging out",
         lambda d: d.execute_script("return document.body.dataset.view") == "login")
    found["logged_out"] = True


def run_key_login(driver, url, out, s, found):
    """Only API keys are configured: the page offers the key form alone, refuses a wrong key,
    takes the right one for a session, and logs out."""
    driver.get(url)
    wait(driver, "the login page", lambda d: d.execute_script("return document.body.dataset.view") == "login")
    found["key_login"] = screenshot(driver, out, "6-key-login")
    found["password_form_shown"] = driver.find_element(By.ID, "login-form").is_displayed()
    form = driver.find_element(By.ID, "key-form")
    found["key_form_shown"] = form.is_displayed()
    field = form.find_element(By.NAME, "api_key")
    field.send_keys(s["key"] + "x")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "the refusal", lambda d: d.find_element(By.ID, "login-error").text)
    found["refused"] = driver.find_element(By.ID, "login-error").text
    field.clear()
    field.send_keys(s["key"])
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    expected = set(s["names"])
    wait(driver, f"rows {sorted(expected)} after the key login", lambda d: expected <= names_shown(d))
    found["after_login_rows"] = sorted(names_shown(driver))
    wait(driver, "the log-out button", lambda d: d.find_element(By.ID, "btn-logout").is_displayed())
    driver.find_element(By.ID, "btn-logout").click()
    wait(driver, "the login page after logging out",
         lambda d: d.execute_script("return document.body.dataset.view") == "login")
    found["logged_out"] = True


def run_scale(driver, url, out, s, found):
    """For scripts/bench-webui.sh: how the page copes with many torrents. Long tasks (the
    main thread busy over 50 ms: the page not answering input) are collected from the
    start."""
    count = str(s["count"])
    started = time.monotonic()
    driver.get(url)
    driver.execute_script(
        """window.__long = [];
        new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
          .observe({ type: 'longtask', buffered: true });""")
    wait(driver, f"{count} torrents", lambda d: d.execute_script("return document.body.dataset.torrents") == count,
         timeout=s.get("load_limit", 120))
    found["first_list_s"] = round(time.monotonic() - started, 2)
    found["rows_in_dom"] = driver.execute_script("return document.querySelectorAll('#list-body .row').length")
    found["long_tasks_loading_ms"] = [round(x) for x in driver.execute_script("return window.__long.splice(0)")]
    # Live updates: the next polls, and the long tasks they caused.
    rid = driver.execute_script("return document.body.dataset.rid")
    polls = 0
    deadline = time.monotonic() + s.get("watch", 30)
    while time.monotonic() < deadline:
        now = driver.execute_script("return document.body.dataset.rid")
        if now != rid:
            polls, rid = polls + 1, now
        time.sleep(0.2)
    found["polls_watched"] = polls
    found["long_tasks_updating_ms"] = [round(x) for x in driver.execute_script("return window.__long.splice(0)")]
    # Input: a sort by name, and a scroll to the bottom, each timed in the page.
    found["sort_by_name_ms"] = round(driver.execute_script(
        "const t = performance.now(); document.querySelector('#list-head [data-key=name]').click();"
        "return performance.now() - t;"), 1)
    found["scroll_to_bottom_ms"] = round(driver.execute_script(
        """const b = document.getElementById('list-body');
        const t = performance.now();
        b.scrollTop = b.scrollHeight;
        b.dispatchEvent(new Event('scroll'));
        return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t))));"""), 1)
    last = driver.execute_script(
        "return [...document.querySelectorAll('#list-body .row')].filter(r => !r.hidden && r.idx !== undefined)"
        ".reduce((m, r) => Math.max(m, r.idx), -1);")
    found["last_row_shown"] = last
    found["screenshot"] = screenshot(driver, out, "scale")


def main():
    url, out, scenario = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("run took too long")))
    signal.alarm(int(scenario.get("limit", 150)))
    found, driver = {"ok": False}, None
    started = time.monotonic()
    try:
        driver = start()
        found["browser"] = driver.capabilities.get("browserVersion")
        if scenario["kind"] == "list":
            run_list(driver, url, out, scenario, found)
        elif scenario["kind"] == "scale":
            run_scale(driver, url, out, scenario, found)
        elif scenario["kind"] == "key_login":
            run_key_login(driver, url, out, scenario, found)
        else:
            run_login(driver, url, out, scenario, found)
        found["ok"] = True
    except BaseException as e:  # noqa: B902 — reported to the test, which fails on it
        found["error"] = f"{type(e).__name__}: {e}"
        if driver is not None:
            try:
                found["error_screenshot"] = screenshot(driver, out, "error")
                found["error_body"] = driver.find_element(By.TAG_NAME, "body").text[:2000]
            except BaseException:
                pass
    finally:
        signal.alarm(0)
        if driver is not None:
            driver.quit()
            shutil.rmtree(driver.profile, ignore_errors=True)
    found["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
