"""The status page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
through Selenium), a real Prometheus server scraping ``/metrics``, and the JSON API against its
schema, all on a live daemon."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from testkit.daemon import Daemon, autokr, drop, job_for, status, stopping, wait_for, write_config
from testkit.require import REPOSITORY, skip_or_fail

pytestmark = pytest.mark.slow
TOKEN = "status-page-test-secret-0123456789"
ARTIFACTS = Path(os.environ.get("AUTOKR_ARTIFACTS") or REPOSITORY / ".artifacts")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def start(place: dict[str, Path], whisper: Path, translator: Path, **settings: object) -> tuple[Daemon, int]:
    port = free_port()
    config = write_config(
        place["root"] / "autokr.toml", place["inbox"], place["root"] / "state", whisper, translator,
        sections={"web": {"listen": f"127.0.0.1:{port}", "token": TOKEN}}, **settings,
    )  # fmt: skip
    return Daemon(config, place["root"] / "daemon.log").start(), port


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        skip_or_fail("chromium and chromium-driver are not installed (apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900"):  # fmt: skip
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.execute_cdp_cmd("Network.enable", {})
    # As a person's browser does once they have typed the token at its basic-auth prompt: it
    # then sends it with every request of the page, by itself (hence the page's CSRF token).
    basic = base64.b64encode(f"me:{TOKEN}".encode()).decode()
    chrome.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}})
    yield chrome
    chrome.quit()


def texts(chrome, selector: str) -> list[str]:
    """The text of each element ``selector`` finds, read at one instant (the page re-renders)."""
    return chrome.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(element => element.textContent)", selector
    )


def click(chrome, selector: str, index: int = 0) -> None:
    chrome.execute_script("[...document.querySelectorAll(arguments[0])].at(arguments[1]).click()", selector, index)


def test_the_page_shows_a_video_move_through_its_stages_and_its_buttons_act(place, clip, tiny_whisper, tiny_nllb,
                                                                             browser):  # fmt: skip
    inbox = place["inbox"]
    (inbox / "Broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3 not really a video" * 100)
    daemon, port = start(place, tiny_whisper, tiny_nllb, videos_per_worker=1)
    with stopping(daemon):
        wait_for(lambda: (job := job_for(daemon.config, "Broken.mkv")) and job["state"] == "failed", 30,
                 "the broken file to fail")  # fmt: skip
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: texts(browser, "#connection") == ["live"], 30, "the page's stream")
        loaded_at = browser.execute_script("return window.autokrLoadedAt")
        assert "Broken.mkv" in texts(browser, "#failed li .name")

        drop(clip, inbox, "Show - 01.mkv")
        seen: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stages = texts(browser, "#running li .stage")
            for stage in stages:
                if not seen or seen[-1] != stage:
                    seen.append(stage)
            if "Show - 01.mkv" in texts(browser, "#done li .name"):
                break
            time.sleep(0.05)
        assert "Show - 01.mkv" in texts(browser, "#done li .name"), seen
        assert len(set(seen)) >= 2 and seen == sorted(seen, key=["extract", "transcribe", "translate",
                                                                  "subtitle"].index), seen  # fmt: skip
        assert browser.execute_script("return window.autokrLoadedAt") == loaded_at  # never reloaded
        assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1

        # Retry: the failed video runs again (and fails again: it is still no video).
        click(browser, "#failed li button[data-action=retry]")
        wait_for(lambda: (job := job_for(daemon.config, "Broken.mkv")) and job["runs"].get("extract") == 1
                 and job["state"] == "failed", 60, "the retried video to run its extract stage")  # fmt: skip
        # To the front: with five waiting, the last one is taken next.
        for number in range(2, 7):
            drop(clip, inbox, f"Show - {number:02}.mkv")
        wait_for(lambda: "Show - 06.mkv" in texts(browser, "#queue li .name"), 60, "the last episode in the queue")
        place_before = job_for(daemon.config, "Show - 06.mkv")["queue_position"]
        browser.execute_script(
            "[...document.querySelectorAll('#queue li')].find(li => li.querySelector('.name').textContent"
            " === 'Show - 06.mkv').querySelector('button[data-action=front]').click()"
        )
        asked = wait_for(lambda: (job := job_for(daemon.config, "Show - 06.mkv")) and job["priority"] and job, 30,
                         "the last episode asked for")  # fmt: skip
        assert place_before > 1 and asked["queue_position"] in (1, None)  # first in line now, or under way
        later = wait_for(lambda: (job := job_for(daemon.config, "Show - 06.mkv")) and job["state"] == "done" and job,
                         120, "the episode asked for to be done")  # fmt: skip
        waiting = [job for job in status(daemon.config) if job["state"] in ("queued", "running")]
        assert later["state"] == "done" and len(waiting) >= 2  # done before the ones ahead of it

        # Refused: an action without the page's CSRF token, and anything without the secret.
        refused = browser.execute_script(
            "return fetch(`/api/v1/jobs/${arguments[0]}/front`, {method: 'POST'}).then(a => a.status)", asked["id"]
        )
        assert refused == 403
        assert get(port, "/api/v1/status", token=None)[0] == 401
        assert get(port, "/", token="wrong-token-wrong-token")[0] == 401

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.set_window_size(390, 844)  # a phone
        time.sleep(0.5)
        shot = ARTIFACTS / "status-page-phone.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at phone width"
        print(f"\nstages seen live: {seen}; screenshot at phone width: {shot}")


def test_prometheus_scrapes_the_daemon_and_the_api_agrees_with_status_json(place, clip, tiny_whisper, tiny_nllb,
                                                                           tmp_path):  # fmt: skip
    import jsonschema

    prometheus = shutil.which("prometheus")
    if prometheus is None:
        skip_or_fail("prometheus is not installed (apt install prometheus)")
    daemon, port = start(place, tiny_whisper, tiny_nllb)
    prometheus_port = free_port()
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: autokr\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        f"    authorization: {{credentials_file: {tmp_path / 'token'}}}\n"
    )
    server = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def query(expression: str) -> dict[str, float]:
        connection = http.client.HTTPConnection("127.0.0.1", prometheus_port, timeout=10)
        try:
            connection.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
            answer = json.loads(connection.getresponse().read())
        except OSError:
            return {}
        finally:
            connection.close()
        return {json.dumps(found["metric"], sort_keys=True): float(found["value"][1])
                for found in answer.get("data", {}).get("result", [])}  # fmt: skip

    try:
        with stopping(daemon):
            for name in ("A.mkv", "B.mkv"):
                drop(clip, place["inbox"], name)
            wait_for(lambda: all((job := job_for(daemon.config, name)) and job["state"] == "done"
                                 for name in ("A.mkv", "B.mkv")), 120, "two videos done")  # fmt: skip
            done = wait_for(lambda: query('autokr_jobs{state="done"}') or None, 30, "Prometheus to scrape the daemon")
            wait_for(lambda: list(query('autokr_jobs{state="done"}').values()) == [2.0], 30, "two done in Prometheus")
            durations = wait_for(
                lambda: (found := query("sum by (stage) (autokr_stage_duration_seconds_count)"))
                and set(found.values()) == {2.0} and len(found) == 4 and found,
                30, "every stage's two durations in Prometheus",
            )  # fmt: skip
            starts = query('autokr_worker_starts_total{stage="transcribe"}')
            exits = query('sum(autokr_worker_exits_total{cause="finished"})')
            resident = query("process_resident_memory_bytes")
            assert sorted(json.loads(key)["stage"] for key in durations) == sorted(
                ["extract", "transcribe", "translate", "subtitle"]
            ) and set(durations.values()) == {2.0}
            assert list(starts.values()) == [1.0] and list(exits.values()) == [4.0]
            assert 20e6 < list(resident.values())[0] < 150e6
            assert all("path" not in key for key in (*done, *durations))  # no unbounded label

            schema = json.loads(get(port, "/api/v1/schema")[1])
            code, body = get(port, "/api/v1/status")
            assert code == 200
            jsonschema.validate(json.loads(body), {**schema, "$ref": "#/$defs/Status"})
            api = json.loads(get(port, "/api/v1/jobs")[1])
            jsonschema.validate(api, {**schema, "type": "array", "items": {"$ref": "#/$defs/Job"}})
            cli = json.loads(autokr(daemon.config, "status", "--json").stdout)
            assert api == cli  # one source of truth: the store
            one = json.loads(get(port, f"/api/v1/jobs/{cli[0]['id']}")[1])
            assert one == cli[0]
            print(f"\nPrometheus scraped: {done}; resident memory {list(resident.values())[0] / 1e6:.1f} MB")
    finally:
        server.terminate()
        server.wait(10)
