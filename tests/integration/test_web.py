"""``serve`` against the lab's real LXD daemons, checked through its JSON API and in a real
headless Chromium (Debian's ``chromium``, driven by Playwright over the DevTools protocol).

Containers are made out of band with plain ``lxc`` and deleted afterwards. One test stops the
lab daemon of server02 (through the lab's record) and brings it back with ``lab_up``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lxdgpu_reconcile.lab import daemon as lab_daemon
from lxdgpu_reconcile.lab import lab_up
from lxdgpu_reconcile.lab.record import load_lab
from tests.helpers import closed_port
from tests.integration.conftest import LabHandle, cannot_run

pytestmark = pytest.mark.lxd

#: A documentation-range address set inside the running container; never sent traffic.
IPV4 = "192.0.2.10"
CHROMIUM = "/usr/bin/chromium"
#: The network is closed: without these flags Chromium tries to reach the internet.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds between two observations in these tests (the page polls as often).
INTERVAL = 1


def ensure_chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (as root, like the lab's lxd)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        cannot_run("the browser test needs Debian's chromium: apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if argv[1] == "install" and done.returncode == 0:
            break
    else:
        subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, check=False)
    if not Path(CHROMIUM).exists():
        cannot_run("apt-get install -y chromium did not provide /usr/bin/chromium")
    return CHROMIUM


@pytest.fixture
def made(lab: LabHandle) -> Iterator[list[tuple[str, str]]]:
    instances: list[tuple[str, str]] = []
    yield instances
    for host, name in instances:
        lab.lxc(host, "delete", "--force", name, check=False)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Seconds it took for ``check()`` to hold; fails after ``seconds``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def served(lab: LabHandle, tmp_path: Path) -> Iterator[str]:
    """``serve`` against the lab on a free loopback port, observing every second; its URL."""
    port = closed_port()
    log = (tmp_path / "serve.log").open("w")
    argv = [sys.executable, "-m", "lxdgpu_reconcile", "serve", "-f", str(lab.fleet_path)]
    argv += ["--lab", str(lab.dir), "--listen", f"127.0.0.1:{port}"]
    argv += ["--interval", str(INTERVAL), "--timeout", "10"]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def healthy() -> bool:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return get(url + "healthz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 60, "serve answers /healthz")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def make_containers(lab: LabHandle, made: list[tuple[str, str]], prefix: str) -> dict[str, str]:
    """A running container of tom's with an address, a stopped one of jerry's, one on server02."""
    names = {"tom": f"{prefix}-tom", "jerry": f"{prefix}-jerry", "spike": f"{prefix}-spike"}
    made += [("server01", names["tom"]), ("server01", names["jerry"])]
    made.append(("server02", names["spike"]))
    parent = lab.spec.profiles["default"].devices["eth0"]["parent"]
    lab.lxc("server01", "init", "busybox", names["tom"], "-c", "user.lxdgpu.user=tom")
    nic = ["nic", "nictype=macvlan", f"parent={parent}"]
    lab.lxc("server01", "config", "device", "add", names["tom"], "eth0", *nic)
    lab.lxc("server01", "start", names["tom"])
    lab.lxc(
        "server01", "exec", names["tom"], "--", "ip", "addr", "add", f"{IPV4}/24", "dev", "eth0"
    )
    lab.lxc("server01", "init", "busybox", names["jerry"], "-c", "user.lxdgpu.user=jerry")
    lab.lxc("server02", "init", "template-busybox", names["spike"], "-c", "user.lxdgpu.user=spike")
    return names


def test_serve_shows_the_lab_in_the_api_and_in_chromium(
    lab: LabHandle, made: list[tuple[str, str]], served: str, tmp_path: Path
) -> None:
    chromium = ensure_chromium()
    try:
        from playwright import sync_api
    except ImportError:
        cannot_run("the browser test needs playwright: .venv/bin/pip install -e '.[test]'")
    names = make_containers(lab, made, f"web{uuid.uuid4().hex[:5]}")
    check_api(served, names)
    with sync_api.sync_playwright() as driver:
        # Playwright passes --user-data-dir itself, from the persistent context's directory.
        browser = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            check_page(lab, browser, served, names, tmp_path)
        finally:
            browser.close()


def check_api(url: str, names: dict[str, str]) -> None:
    def listed() -> bool:
        data = json.loads(get(url + "api/v1/status")[1])
        rows = {c["name"]: c for c in data["containers"]}
        return set(names.values()) <= set(rows) and rows[names["tom"]]["ipv4"] == [IPV4]

    wait_until(listed, 10, "the API lists every container with its address")
    status, body = get(url + "api/v1/status")
    data: dict[str, Any] = json.loads(body)
    assert status == 200 and data["format"] == 1 and data["ok"] is True
    assert {h["name"] for h in data["hosts"]} == {"server01", "server02"}
    rows = {c["name"]: c for c in data["containers"]}
    assert rows[names["tom"]]["state"] == "running" and rows[names["tom"]]["user"] == "tom"
    assert rows[names["jerry"]]["state"] == "stopped" and rows[names["jerry"]]["ipv4"] == []
    assert rows[names["spike"]]["host"] == "server02"
    metrics = get(url + "metrics")[1].decode()
    assert 'lxdgpu_web_host_up{host="server02"} 1' in metrics
    assert ".crt" not in body.decode() + metrics and ".key" not in body.decode() + metrics


def check_page(lab: LabHandle, browser: Any, url: str, names: dict[str, str], out: Path) -> None:
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function(
        "ip => [...document.querySelectorAll('#rows td.addr')].some(td => td.textContent === ip)",
        arg=IPV4,
        timeout=10_000,
    )
    tom_row = page.locator("#rows tr", has_text=names["tom"])
    assert tom_row.locator("td[data-label=IPv4]").text_content() == IPV4

    page.fill("#search", "jerry")
    visible = page.locator("#rows tr:visible")
    assert visible.count() >= 1
    for text in visible.all_text_contents():
        assert "jerry" in text
    assert not tom_row.is_visible()
    page.fill("#search", "")
    assert tom_row.is_visible()
    page.screenshot(path=str(out / "web-laptop.png"), full_page=True)

    lab_daemon.stop(load_lab(lab.dir).hosts["server02"])
    try:
        badge = page.locator("article[data-host=server02] .badge")
        took = wait_until(
            lambda: (badge.text_content() or "").startswith("stale: unreachable"),
            # One observation interval, one poll of the page, and the observation itself.
            3 * INTERVAL + 2,
            "server02 shows as stale with its error",
        )
        error = page.locator("article[data-host=server02] .error").text_content() or ""
        assert "server02" in error
        assert "stale" in (page.locator("#rows tr", has_text=names["spike"]).text_content() or "")
        page.screenshot(path=str(out / "web-laptop-stale.png"), full_page=True)
        phone = browser.new_page()
        phone.set_viewport_size({"width": 390, "height": 844})
        phone.goto(url)
        phone.wait_for_selector("#rows tr")
        phone.screenshot(path=str(out / "web-phone.png"), full_page=True)
        print(f"\nserver02 turned stale after {took:.1f} s; screenshots in {out}")
    finally:
        lab_up(lab.spec, lab.dir)
