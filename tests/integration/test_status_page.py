"""The master's status page in a real browser (headless Chromium from Debian, driven by
Selenium): it shows the servers and volumes of a 3-server cluster, marks a killed
server dead and its volumes under-replicated within a few seconds without a reload,
and logs no JavaScript error. A screenshot is saved in the test's temporary directory.

Skipped (with the reason) when chromium, chromium-driver or python3-selenium are
missing or the browser cannot start (scripts/install-deps installs them)."""

import os
import shutil
import time

import pytest

from cluster import PULSE, make_cluster, wait_for  # noqa: F401  (pytest fixture)

PAGE_WAIT = 10.0   # seconds for the page to show a change (it refreshes every 2 s)


def _browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip("python3-selenium is not installed (%s)" % e)
    driver_bin = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not shutil.which("chromium") or not shutil.which(driver_bin):
        pytest.skip("chromium or chromium-driver is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1200", "--user-data-dir=%s" % (tmp_path / "chromium")):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver_bin), options=opts)
    except Exception as e:  # WebDriverException and friends: no usable browser here
        pytest.skip("headless Chromium did not start: %s" % str(e).splitlines()[0])


def _js(driver, script):
    """Reads the DOM in one script: the page rebuilds its elements every 2 s, so element
    handles kept across calls would go stale."""
    return driver.execute_script(script)


def _rows(driver, selector):
    return set(_js(driver, "return [...document.querySelectorAll('%s')]"
                           ".map(e => +e.dataset.id)" % selector))


def _errors(driver):
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_status_page_in_a_browser(make_cluster, tmp_path):
    c = make_cluster([("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1")])
    m = c.master
    m.grow(count=2, replication="010")   # two copies in two racks of one data center
    m.grow(count=1, replication="000")
    wait_for("5 volume copies on the servers",
             lambda: sum(len(v.volumes()) for v in c.volumes) == 5, 10)
    body, _ = m.dir_assign(replication="010")
    c.put(body["url"], body["fid"], b"hello page")

    driver = _browser(tmp_path)
    try:
        from selenium.webdriver.common.by import By

        driver.set_page_load_timeout(20)
        driver.get("http://%s/" % m.addr)
        driver.execute_script("window.kelpTestMarker = 42")   # gone if the page reloads

        def servers():
            return dict(_js(driver, "return [...document.querySelectorAll('.server[data-url]')]"
                                    ".map(e => [e.dataset.url, e.className])"))
        wait_for("the 3 servers on the page",
                 lambda: len(servers()) == 3 and all("alive" in v for v in servers().values()),
                 PAGE_WAIT)
        assert set(servers()) == {v.addr for v in c.volumes}
        assert _rows(driver, "tr.volume[data-id]") == c.all_volume_ids()
        assert not _rows(driver, "tr.volume.under")
        assert "fully replicated" in driver.find_element(By.ID, "verdict").text
        dcs = set(_js(driver, "return [...document.querySelectorAll('.dc')].map(e => e.dataset.dc)"))
        assert dcs == {"dc1", "dc2"}
        # The fill bars are the servers' real disks (the heartbeats report them), as df.
        st = os.statvfs(str(tmp_path))
        df = 100 * (st.f_blocks - st.f_bavail) / st.f_blocks
        bars = _js(driver, "return [...document.querySelectorAll('.server[data-url] .bar')]"
                           ".map(e => [e.title, parseFloat(e.firstChild.style.width)])")
        assert len(bars) == 3 and all("of disk" in t for t, _ in bars), bars
        assert all(abs(w - df) < 5 for _, w in bars), (bars, df)

        # Kill the dc1/r2 server: it turns dead, its 010 volumes under-replicated.
        victim = c.volumes[1]
        lost = set(victim.volumes())
        victim.kill()
        t0 = time.monotonic()
        wait_for("the killed server marked dead on the page",
                 lambda: "dead" in servers().get(victim.addr, ""), 3 * PULSE + PAGE_WAIT)
        took = time.monotonic() - t0
        wait_for("its volumes shown under-replicated",
                 lambda: _rows(driver, "tr.volume.under") == lost, PAGE_WAIT)
        under = _rows(driver, "tr.volume.under")
        red = _js(driver, "return getComputedStyle(document.querySelector("
                          "'tr.volume.under td')).color")
        assert red.replace("rgba", "rgb").startswith("rgb(207, 34, 46"), red
        assert driver.execute_script("return window.kelpTestMarker") == 42, "the page reloaded"
        assert "lack copies" in driver.find_element(By.ID, "verdict").text
        events = driver.find_element(By.ID, "events").text
        assert "grown" in events, events
        shot = tmp_path / "status-page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10000
        errors = _errors(driver)
        assert not errors, errors
        print("dead after %.1f s; under-replicated %s; screenshot %s" % (took, under, shot))
    finally:
        driver.quit()


def test_volume_server_page_in_a_browser(make_cluster, tmp_path):
    c = make_cluster([("dc1", "r1")])
    body, _ = c.master.dir_assign()
    c.put(body["url"], body["fid"], b"x" * 100)
    vs = c.volumes[0]
    driver = _browser(tmp_path)
    try:
        from selenium.webdriver.common.by import By

        driver.get("http://%s/ui" % vs.addr)
        wait_for("the volumes on the page",
                 lambda: _rows(driver, "tr.volume[data-id]") == set(vs.volumes()), PAGE_WAIT)
        assert _js(driver, "return document.querySelectorAll('tr.disk').length") == 1
        errors = _errors(driver)
        assert not errors, errors
        driver.save_screenshot(str(tmp_path / "volume-page.png"))
    finally:
        driver.quit()
