"""The hub's web pages in a real browser: Debian's chromium driven by Playwright against a real hub
(uvicorn on loopback, SQLite migrated by Alembic) seeded with real signed experiments over the API.

Each page is opened, its key content checked against the JSON API, and a screenshot saved under
``test-artifacts/pages/`` (git-ignored). Skipped when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from autoresearch.hub import migrate, store
from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.deps import HubState
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import KeyPair, TrackSpec, utc_now, verify
from tests.hub import factory as f

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

StartHub = Callable[[bool, TrackCatalog], tuple[str, FastAPI]]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"
H100 = "NVIDIA H100 80GB HBM3"
ADMIN_TOKEN = "admin-secret-for-tests"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")


# --------------------------------------------------------------------------------------------------
# A real hub on loopback


@dataclass
class Hub:
    url: str
    track: TrackSpec
    state: HubState
    ids: dict[str, str]  # name of a seeded experiment → record id
    keys: dict[str, KeyPair]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartHub]:
    """Start hubs (uvicorn threads on loopback); each call gives (url, app) and is stopped at the end."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(private: bool, catalog: TrackCatalog) -> tuple[str, FastAPI]:
        db = tmp_path_factory.mktemp("hub") / "hub.db"
        url = f"sqlite:///{db}"
        migrate.upgrade(url)
        settings = HubSettings(db_url=url, private=private, admin_token=ADMIN_TOKEN, json_logs=False)
        app = create_app(settings, catalog=catalog)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}", app

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def _post(http: httpx.Client, path: str, body: bytes) -> str:
    r = http.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


def _seed(http: httpx.Client, track: TrackSpec) -> tuple[dict[str, str], dict[str, KeyPair]]:
    """Two clients on two hardware classes; a calibrated lineage ref → e1 → e3 with a discard, a
    crash and a replication of e1 on another hardware class."""
    alice, bob = KeyPair.generate(), KeyPair.generate()
    _post(http, "/api/v1/clients", f.envelope_bytes(f.registration(alice, "alice-cpu"), alice))
    _post(http, "/api/v1/clients", f.envelope_bytes(f.registration(bob, "bob-h100", H100), bob))
    # Curves that put the runs below within reach of each machine's reference (not implausible).
    cal_a = _post(http, "/api/v1/calibrations", f.envelope_bytes(f.calibration(track, asymptote=1.5), alice))
    cal_b = _post(http, "/api/v1/calibrations", f.envelope_bytes(
        f.calibration(track, hardware_class=H100, asymptote=1.2, sigma=0.008, machine=1), bob))
    cal = {id(alice): cal_a, id(bob): cal_b}
    ref = f.REFERENCE
    c1 = f.with_constant(ref, "MATRIX_LR", 0.05)
    c2 = f.with_constant(c1, "EMBED_LR", 0.4)
    c3 = f.with_constant(c1, "WARMUP_STEPS", 20)
    c4 = f.with_constant(c3, "DEPTH", 3)
    t0 = utc_now() - timedelta(minutes=50)
    plan = [
        ("e1", alice, ref, c1, dict(val_bpb=1.55, parent_val_bpb=1.60, z=2.5, ecm=1.3, gain=1.3, description="MATRIX_LR 0.04 → 0.05",
                                    loss_curve=f.loss_curve(24, end=3.1))),
        ("e2", alice, c1, c2, dict(val_bpb=1.57, parent_val_bpb=1.55, z=-1.0, ecm=1.1, gain=0.85, description="EMBED_LR 0.6 → 0.4")),
        ("e3", alice, c1, c3, dict(val_bpb=1.52, parent_val_bpb=1.55, z=1.5, ecm=1.6, gain=1.23, description="WARMUP_STEPS 10 → 20",
                                    loss_curve=f.loss_curve(30, end=3.0))),
        ("e4", alice, c3, c4, dict(val_bpb=None, parent_val_bpb=1.52, outcome="oom", z=None, description="DEPTH 2 → 3")),
        ("e1b", bob, ref, c1, dict(val_bpb=1.21, parent_val_bpb=1.25, z=2.0, hardware_class=H100, description="MATRIX_LR 0.04 → 0.05")),
    ]
    ids = {}
    for i, (name, keys, parent, child, kw) in enumerate(plan):
        record = f.experiment(track, parent, child, created_at=t0 + timedelta(minutes=10 * i),
                              calibration_id=cal[id(keys)], **kw)
        ids[name] = _post(http, "/api/v1/experiments", f.envelope_bytes(record, keys))
    return ids, {"alice": alice, "bob": bob}


@pytest.fixture(scope="module")
def hub(serve: StartHub) -> Hub:
    track = f.make_track()
    catalog = TrackCatalog.of([(track, lambda: f.REFERENCE)])
    url, app = serve(False, catalog)
    with httpx.Client(base_url=url, timeout=30) as http:
        ids, keys = _seed(http, track)
    return Hub(url, track, app.state.hub, ids, keys)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context per test; JavaScript errors on a page fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)  # ms; generous for a loaded 2-core machine
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def _shot(pg: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _api(hub: Hub, path: str, **params: Any) -> Any:
    r = httpx.get(hub.url + path, params=params, timeout=30)
    r.raise_for_status()
    return r.json()


# --------------------------------------------------------------------------------------------------
# Pages


def test_home_shows_tracks_activity_and_the_apis_best(hub: Hub, page: Page) -> None:
    pg = page
    pg.goto(hub.url + "/")
    best = _api(hub, f"/api/v1/tracks/{hub.track.id}")["best_val_bpb"]
    assert pg.locator(f'.best-bpb[data-track="{hub.track.id}"] .mono').inner_text() == f"{best:.4f}"
    assert best == pytest.approx(1.21)  # bob's H100 run is the lowest raw val_bpb of any class
    activity = _api(hub, "/api/v1/activity", hours=24)
    assert (activity["experiments"], activity["clients"]) == (5, 2)
    assert pg.locator("#stat-active-clients").inner_text() == "2"
    assert pg.locator("#stat-per-hour").inner_text() == f"{5 / 24:.1f}"
    assert pg.locator("#stat-experiments").inner_text() == "5"
    assert pg.locator("table.experiments tbody tr").count() == 5
    _shot(pg, "home")


def test_track_page_chart_has_one_point_per_experiment(hub: Hub, page: Page) -> None:
    pg = page
    pg.goto(f"{hub.url}/tracks/{hub.track.id}?hw={f.HARDWARE}")
    pg.wait_for_function("window.arCharts && window.arCharts.instances['progress-plot']")
    data = pg.evaluate("window.arCharts.instances['progress-plot'].data")
    listed = _api(hub, "/api/v1/experiments", track=hub.track.id, hardware_class=f.HARDWARE)["items"]
    x, discard, crash, frontier, keep = data
    assert len(x) == len(listed) == 4
    for i in range(len(x)):  # exactly one of keep / discard / crash per experiment
        assert sum(v is not None for v in (keep[i], discard[i], crash[i])) == 1
    assert [v for v in keep if v is not None] == [1.55, 1.52]
    assert [v for v in discard if v is not None] == [1.57]
    assert sum(v is not None for v in crash) == 1
    assert frontier == [1.55, 1.55, 1.52, 1.52]
    shown = json.loads(pg.locator("#progress-data").text_content())
    api = _api(hub, f"/api/v1/tracks/{hub.track.id}/progress", hardware_class=f.HARDWARE)
    newest = _api(hub, "/api/v1/experiments", track=hub.track.id)["items"][0]["record"]["hardware_class"]
    default = _api(hub, f"/api/v1/tracks/{hub.track.id}/progress")  # no class: the newest experiment's, not a 422
    assert default["hardware_class"] == newest and default["points"]
    assert shown["ids"] == [p["id"] for p in api["points"]] == [hub.ids[k] for k in ("e1", "e2", "e3", "e4")]
    best = _api(hub, f"/api/v1/tracks/{hub.track.id}/best")["val_bpb"]
    assert pg.locator("#best-val-bpb").inner_text() == f"{best:.4f}"
    assert pg.locator("table.leaderboard").count() == 3  # ECM + 2 hardware classes
    assert pg.locator("table.directions tbody tr").count() >= 3
    _shot(pg, "track")
    # hovering a point shows its description
    box = pg.locator("#progress-plot .u-over").bounding_box()
    pg.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    assert "DEPTH 2 → 3" in pg.locator("#progress .tip").inner_text()


def test_experiment_page_diff_lineage_replications_and_envelope(hub: Hub, page: Page, tmp_path: Path) -> None:
    pg = page
    pg.goto(f"{hub.url}/experiments/{hub.ids['e2']}")
    assert pg.locator("#description").inner_text() == "EMBED_LR 0.6 → 0.4"
    added = pg.locator(".diff .gi").all_inner_texts()
    removed = pg.locator(".diff .gd").all_inner_texts()
    assert any(t.startswith("+EMBED_LR = 0.4") for t in added)
    assert any(t.startswith("-EMBED_LR = 0.6") for t in removed)
    assert pg.locator("#val-bpb").inner_text() == "1.5700"
    assert pg.locator("#record-id").inner_text() == hub.ids["e2"]
    assert pg.locator("#key-id").inner_text() == hub.keys["alice"].key_id
    assert pg.locator("#isolation").inner_text().startswith("none")  # the factory's records say no isolation
    assert pg.locator("#lineage li.ancestor a").all_inner_texts() == [hub.ids["e1"][:12]]
    _shot(pg, "experiment-discard")

    with pg.expect_download() as download:
        pg.click("#envelope-link")
    saved = tmp_path / "envelope.json"
    download.value.save_as(saved)
    assert verify(saved.read_bytes()).record_id == hub.ids["e2"]
    cli = Path(sys.executable).with_name("autoresearch")
    done = subprocess.run([str(cli), "verify", str(saved)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert hub.ids["e2"] in done.stdout

    pg.goto(f"{hub.url}/experiments/{hub.ids['e1']}")
    reps = pg.locator("#replications li").all_inner_texts()
    assert len(reps) == 2 and any(hub.ids["e1b"][:12] in r for r in reps)
    assert H100 in pg.locator("section", has_text="Replications").inner_text()
    children = pg.locator("#lineage li.child a").all_inner_texts()
    assert sorted(children) == sorted([hub.ids["e2"][:12], hub.ids["e3"][:12]])
    _shot(pg, "experiment-keep")

    pg.goto(f"{hub.url}/experiments/{hub.ids['e4']}")
    assert pg.locator(".lede .badge.crash").inner_text() == "oom"


def test_experiment_page_loss_curve_and_train_py_download(hub: Hub, page: Page, tmp_path: Path) -> None:
    pg = page
    detail = _api(hub, f"/api/v1/experiments/{hub.ids['e3']}")
    pg.goto(f"{hub.url}/experiments/{hub.ids['e3']}")
    pg.wait_for_function("window.arCharts && window.arCharts.instances['loss-plot']")
    x, curve = pg.evaluate("window.arCharts.instances['loss-plot'].data")
    points = detail["record"]["loss_curve"]
    assert len(points) == 30 and x == [p["seconds"] for p in points] and curve == [p["loss"] for p in points]
    labels = pg.evaluate("window.arCharts.instances['loss-plot'].axes.map((a) => a.label)")  # drawn on the canvas
    assert labels == ["training seconds (time budget clock)", "train loss (nats/token)"]
    _shot(pg, "experiment-loss")
    with pg.expect_download() as download:
        pg.click("#download-train-py")
    assert download.value.suggested_filename == "train.py"
    saved = tmp_path / "train.py"
    download.value.save_as(saved)
    assert saved.read_text() == detail["child_source"]
    # a run without a loss curve has no chart (and no JavaScript error)
    pg.goto(f"{hub.url}/experiments/{hub.ids['e2']}")
    assert pg.locator("#loss-plot").count() == 0


def test_compare_parent_and_child_side_by_side(hub: Hub, page: Page) -> None:
    pg = page
    pg.goto(f"{hub.url}/experiments/{hub.ids['e3']}")
    pg.click("#compare-parent")
    pg.wait_for_url("**/compare?*")
    assert pg.locator("#a-link").inner_text() == hub.ids["e1"][:12] and pg.locator("#b-link").inner_text() == hub.ids["e3"][:12]
    rows = {r.locator("th").inner_text(): r.locator("td").all_inner_texts() for r in pg.locator("#compare tbody tr").all()}
    assert rows["val_bpb"] == ["1.5500", "1.5200", "\u22120.0300"]
    assert rows["hardware class"][:2] == [f.HARDWARE, f.HARDWARE]
    # the diff is e1's train.py → e3's: only WARMUP_STEPS changed
    added = pg.locator(".diff .gi").all_inner_texts()
    assert [t for t in added if not t.startswith("+++")] == ["+WARMUP_STEPS = 20"]
    pg.wait_for_function("window.arCharts && window.arCharts.instances['loss-plot']")
    data = pg.evaluate("window.arCharts.instances['loss-plot'].data")
    assert len(data) == 3  # x and one curve each
    _shot(pg, "compare")
    # the form on an experiment page compares with any id; a bad id is an HTML 404, not a 422
    pg.goto(f"{hub.url}/experiments/{hub.ids['e1']}")
    pg.fill("#compare-form input[name=b]", hub.ids["e1b"][:12])
    pg.click("#compare-form button")
    pg.wait_for_url("**/compare?*")
    assert pg.locator(".lede .badge.warn").inner_text() == "different hardware classes"
    response = pg.goto(f"{hub.url}/compare?a={hub.ids['e1']}&b={'0' * 64}")
    assert response is not None and response.status == 404


def test_track_page_filters_recent_experiments(hub: Hub, page: Page) -> None:
    pg = page
    pg.goto(f"{hub.url}/tracks/{hub.track.id}")
    pg.select_option("#filters select[name=status]", "keep")
    pg.select_option("#filters select[name=hardware_class]", f.HARDWARE)
    pg.click("#filters button")
    pg.wait_for_url("**status=keep**")
    links = "#recent ~ .tablewrap table.experiments tbody tr td:first-child a.mono"
    shown = [a.get_attribute("title") for a in pg.locator(links).all()]
    api = _api(hub, "/api/v1/experiments", track=hub.track.id, status="keep", hardware_class=f.HARDWARE)["items"]
    assert shown == [e["id"] for e in api] == [hub.ids["e3"], hub.ids["e1"]]
    assert pg.locator("#filters select[name=status]").input_value() == "keep"
    pg.select_option("#filters select[name=status]", "crash")
    pg.click("#filters button")
    pg.wait_for_url("**status=crash**")
    assert [a.get_attribute("title") for a in pg.locator(links).all()] == [hub.ids["e4"]]
    pg.click("#clear-filters")
    pg.wait_for_url(f"**/tracks/{hub.track.id}#recent")
    assert pg.locator("#recent ~ .tablewrap table.experiments tbody tr").count() == 5
    assert httpx.get(f"{hub.url}/api/v1/experiments", params={"status": "kept"}).status_code == 422


def test_chart_axes_never_repeat_a_label(hub: Hub, page: Page) -> None:
    pg = page
    pg.goto(f"{hub.url}/tracks/{hub.track.id}?hw={f.HARDWARE}")
    pg.wait_for_function("window.arCharts && window.arCharts.instances['progress-plot']")
    # uPlot draws the ticks on the canvas; _values holds the texts it drew (uPlot 1.6)
    ticks = [t for t in pg.evaluate("window.arCharts.instances['progress-plot'].axes[0]._values") if t]
    assert ticks and len(ticks) == len(set(ticks)), ticks
    # 30 s ticks over 15 minutes print HH:mm: every repeat of a minute is left blank
    ticks = pg.evaluate("window.arCharts.utcTicks()(null, Array.from({length: 31}, (_, i) => 1.7e9 + 30 * i))")
    shown = [t for t in ticks if t]
    assert len(shown) == 16 and len(set(shown)) == 16 and all(len(t) == 5 for t in shown), ticks
    ticks = pg.evaluate("window.arCharts.utcTicks()(null, Array.from({length: 10}, (_, i) => 1.7e9 + 20 * i))")
    assert len(set(ticks)) == 10 and all(len(t) == 8 for t in ticks), ticks  # under 10 minutes: HH:mm:ss


def test_links_from_home_to_an_experiment_and_back(hub: Hub, page: Page) -> None:
    pg = page
    pg.goto(hub.url + "/")
    pg.click(f"table.tracks a[href='/tracks/{hub.track.id}']")
    pg.wait_for_url(f"**/tracks/{hub.track.id}")
    first = pg.locator("#recent ~ .tablewrap table.experiments tbody tr a.mono").first
    first.click()
    pg.wait_for_url("**/experiments/*")
    assert pg.url.rsplit("/", 1)[1] == hub.ids["e1b"]  # newest first
    pg.click("#track-link")
    pg.wait_for_url(f"**/tracks/{hub.track.id}")
    pg.go_back()
    pg.wait_for_url("**/experiments/*")
    pg.click(".crumbs a:first-child")
    pg.wait_for_url(hub.url + "/")


def test_directions_page_matches_the_api(hub: Hub, page: Page) -> None:
    pg = page
    pg.goto(f"{hub.url}/tracks/{hub.track.id}/directions")
    api = {d["direction"]: d for d in _api(hub, f"/api/v1/tracks/{hub.track.id}/directions")}
    rows = pg.locator("table.directions tbody tr")
    assert rows.count() == len(api) > 0
    shown = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        shown[cells[0]] = (int(cells[1]), int(cells[2]), int(cells[3]))
    assert shown == {k: (d["tries"], d["keeps"], d["crashes"]) for k, d in api.items()}
    matrix = rows.filter(has_text="MATRIX_LR")
    links = matrix.locator("td.evidence a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert links == [f"/experiments/{i}" for i in api["MATRIX_LR ↑"]["evidence"][:3]] and links
    _shot(pg, "directions")


def test_client_page_shows_calibration_curve_and_experiments(hub: Hub, page: Page) -> None:
    pg = page
    alice = hub.keys["alice"].key_id
    pg.goto(f"{hub.url}/clients/{alice}")
    pg.wait_for_function("window.arCharts && window.arCharts.instances['cal-plot-1']")
    data = pg.evaluate("window.arCharts.instances['cal-plot-1'].data")
    measured = [v for v in data[2] if v is not None]
    assert len(measured) == 4  # 5 reference runs, two at the same budget share one x: 4 distinct points
    cals = _api(hub, f"/api/v1/clients/{alice}/calibrations")
    assert len(cals) == 1 and f"{cals[0]['sigma']:.4f}" in pg.locator(".calibration + dl").inner_text()
    assert pg.locator("table.experiments tbody tr").count() == 4
    assert pg.locator("#client-key-id").inner_text() == alice
    _shot(pg, "client")


def test_unknown_experiment_is_an_html_404(hub: Hub, page: Page) -> None:
    pg = page
    response = pg.goto(f"{hub.url}/experiments/{'0' * 64}")
    assert response.status == 404
    assert "no experiment" in pg.locator("main").inner_text()


def test_tables_work_without_javascript(hub: Hub, browser: Browser) -> None:
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto(f"{hub.url}/tracks/{hub.track.id}")
    assert pg.locator("table.experiments tbody tr").count() == 5
    assert pg.locator("table.leaderboard").count() == 3
    context.close()


def test_static_files_are_served_and_confined(hub: Hub) -> None:
    r = httpx.get(hub.url + "/static/vendor/uplot/uPlot.iife.min.js", timeout=30)
    assert r.status_code == 200 and "uPlot" in r.text
    assert httpx.get(hub.url + "/static/../app.py", timeout=30).status_code == 404
    assert httpx.get(hub.url + "/static/%2e%2e/app.py", timeout=30).status_code == 404


def test_an_empty_hub_says_what_to_do_and_descriptions_are_text(serve: StartHub, page: Page) -> None:
    track = f.make_track()
    url, _ = serve(False, TrackCatalog.of([(track, lambda: f.REFERENCE)]))
    pg = page
    pg.goto(url + "/")
    assert f"autoresearch join {url}" in pg.locator(".empty").inner_text()
    _shot(pg, "home-empty")
    pg.goto(f"{url}/tracks/{track.id}")
    assert "No experiments on this track yet" in pg.locator("main").inner_text()
    assert pg.locator("#best-val-bpb").inner_text() == "–"
    _shot(pg, "track-empty")

    # a hostile description is shown as text everywhere, never run (tables, chart JSON, hover box)
    hostile = "</script><script>window.pwned = 1</script><b>bold</b>"
    keys = KeyPair.generate()
    with httpx.Client(base_url=url, timeout=30) as http:
        _post(http, "/api/v1/clients", f.envelope_bytes(f.registration(keys, "mallory"), keys))
        child = f.with_constant(f.REFERENCE, "DEPTH", 3)
        eid = _post(http, "/api/v1/experiments", f.envelope_bytes(f.experiment(track, f.REFERENCE, child, description=hostile), keys))
    for path in (f"/tracks/{track.id}", f"/experiments/{eid}", "/"):
        pg.goto(url + path)
        assert pg.evaluate("window.pwned") is None
        assert pg.locator("b", has_text="bold").count() == 0
        assert hostile in pg.locator("main").inner_text()


# --------------------------------------------------------------------------------------------------
# Private hub


def test_private_hub_login_flow(serve: StartHub, page: Page) -> None:
    track = f.make_track()
    url, app = serve(True, TrackCatalog.of([(track, lambda: f.REFERENCE)]))
    state = app.state.hub
    with state.sessions() as session:
        token = store.create_token(session, "read", "browser test")
        session.commit()
    assert httpx.get(url + "/api/v1/tracks", timeout=30).status_code == 401

    pg = page
    pg.goto(f"{url}/tracks/{track.id}")
    assert "/login" in pg.url
    _shot(pg, "login")
    pg.fill("#token", "not-a-token")
    pg.click("button[type=submit]")
    assert "does not know that token" in pg.locator("#login-error").inner_text()
    pg.fill("#token", token)
    pg.click("button[type=submit]")
    pg.wait_for_url(f"**/tracks/{track.id}")
    assert pg.locator("h1").first.inner_text().startswith(track.name)
    # the cookie also opens the JSON API to this browser (e.g. the envelope download link)
    api = pg.goto(f"{url}/api/v1/tracks")
    assert api.status == 200 and json.loads(api.text())[0]["spec"]["id"] == track.id
    pg.goto(url + "/logout")
    assert "/login" in pg.url
