"""A user's afternoon with Crucible UI, in Chromium: sign in, run and watch experiments,
read logs, download checkpoints and reports, test and explore, sign out."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.ui.browser_support import sign_in
from tests.ui.conftest import UiServer

pytestmark = pytest.mark.slow

TIMEOUT_MS = 15_000
# What the page's charts show, as charts.js reports it (expressions that await).
SERIES_OF = "(await import('/ui/charts.js')).seriesOf"
POINTS_ON_CHARTS = f"[...document.querySelectorAll('.plot')].flatMap({SERIES_OF}).reduce((n, s) => n + s.x.length, 0)"
DRAWN_CHART = ".plot[data-points]:not([data-points='0'])"  # drawn, with its points


def api(server: UiServer, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    request = urllib.request.Request(
        server.url + "/api/v1" + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method or ("GET" if body is None else "POST"),
        headers={"Authorization": f"Bearer {server.secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
        return json.loads(text) if text else None


def demo_experiments(server: UiServer) -> list[dict[str, Any]]:
    found = api(server, "/experiments?per_page=100&filter[tag]=demo")["data"]
    return [e for e in found if e["status"] == "completed"]


def until(page: Any, expression: str, timeout_ms: int = TIMEOUT_MS) -> None:
    """Poll a JavaScript expression (it may await) from here until it is true. (Playwright's
    wait_for_function compiles its text in the page, which the pages' policy refuses: no eval.)"""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(f"(async () => {{ try {{ return Boolean({expression}); }} catch {{ return false; }} }})()"):
        assert time.monotonic() < deadline, f"still false after {timeout_ms} ms: {expression}"
        page.wait_for_timeout(50)


def refusal_shown(page: Any, status: int, url_part: str, control: str) -> str:
    """Press `control`, whose request the API refuses with `status`; the notice the page shows."""
    page.expect_status(status, url_part)
    page.click(control)
    notice = page.locator("#notice")
    notice.wait_for()
    return str(notice.inner_text())


def heading(page: Any) -> str:
    return str(page.locator("main h1").first.inner_text())


def test_the_printed_link_signs_in_once_and_sign_out_ends_the_session(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    page.goto(ui_server.link)
    page.wait_for_url(ui_server.url + "/")
    assert heading(page) == "Home"
    page.locator("#live-state.on").wait_for(timeout=TIMEOUT_MS)  # the live connection is up
    # The dashboard channel's figures arrive pushed.
    until(page, "document.querySelectorAll('.card .value')[2].textContent.includes('%')")
    assert page.locator("text=Recent experiments").is_visible()
    page.click("#sign-out")
    page.wait_for_url(re.compile(r"/sign-in\?signed_out=1$"))
    page.locator("#notice:has-text('signed out')").wait_for()
    page.goto("/experiments")
    page.wait_for_url(re.compile(r"/sign-in\?next=%2Fexperiments$"))
    page.goto(ui_server.link)  # spent
    page.wait_for_url(re.compile(r"/sign-in\?link=spent$"))
    page.locator("#notice:has-text('already used or has expired')").wait_for()


def test_signing_in_with_a_key_leads_where_the_user_was_going(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    page.goto("/experiments?status=completed")
    page.wait_for_url(re.compile(r"/sign-in\?next="))
    page.expect_status(401, "/api/v1/sessions")
    page.fill("#api-key", "crucible.key_nobody.wrong")
    page.click("button[type=submit]")
    page.locator("#notice:has-text('not valid')").wait_for()
    assert page.locator("#api-key").evaluate("input => input.type") == "password"
    page.fill("#api-key", ui_server.secret)
    page.click("button[type=submit]")
    page.wait_for_url(ui_server.url + "/experiments?status=completed")
    assert page.locator("select[name=status]").input_value() == "completed"
    page.locator("tbody .status").first.wait_for()  # the list comes after the URL changed
    statuses = page.locator("tbody .status").all_inner_texts()
    assert statuses and set(statuses) == {"completed"}


def test_create_start_pause_resume_and_a_refused_action_says_why(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    # Another user's cancel reaches the page live and takes its pause button away; to press
    # pause after the cancel as a slower page would, the status pushes are held back then.
    hold_status_pushes = False

    def relay(socket: Any) -> None:
        server = socket.connect_to_server()
        server.on_message(
            lambda message: None if hold_status_pushes and "status_changed" in str(message) else socket.send(message)
        )

    page.route_web_socket(re.compile(r"/socket/websocket"), relay)
    sign_in(page.context, ui_server.secret)
    page.goto("/experiments")
    name = f"browser test {time.time_ns()}"
    page.fill("#create-experiment input[name=name]", name)
    page.fill("#create-experiment input[name=tags]", "browser, e2e")
    page.fill("#create-experiment textarea[name=config]", '{"metric": "accuracy", "dataset": "mmlu"}')
    page.click("#create-experiment button[type=submit]")
    page.wait_for_url(re.compile(r"/experiments/exp_"))
    assert name in heading(page)
    assert page.locator("h1 .status").inner_text() == "pending"
    for action, status in (("start", "running"), ("pause", "paused"), ("resume", "running")):
        page.click(f".actions button:text-is('{action}')")
        page.locator(f"h1 .status:text-is('{status}')").wait_for(timeout=TIMEOUT_MS)
    # Cancelled behind the page's back: the page's pause is refused, and says why.
    experiment_id = page.url.rsplit("/", 1)[1]
    hold_status_pushes = True
    api(ui_server, f"/experiments/{experiment_id}/cancel", {})
    shown = refusal_shown(page, 409, f"/experiments/{experiment_id}/pause", ".actions button:text-is('pause')")
    assert "pause refused" in shown and "409" in shown


def test_progress_and_learning_curves_move_without_a_reload(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    demo = ui_server.demo(seconds=25, workers=2)
    try:
        experiment = _wait_for_running_demo(ui_server)
        page.goto(f"/experiments/{experiment['id']}")
        page.locator(DRAWN_CHART).first.wait_for(timeout=TIMEOUT_MS)
        page.evaluate("window.notReloaded = true")
        first_progress = page.locator("progress").first.evaluate("bar => bar.value")
        first_points = _points(page)
        until(page, f"document.querySelector('progress').value > {first_progress}")
        until(page, f"{POINTS_ON_CHARTS} > {first_points}")
        assert page.evaluate("window.notReloaded") is True
        # A training run's own chart grows point by point from the live telemetry.
        page.click("td a[href^='/runs/']")
        page.wait_for_url(re.compile(r"/runs/run_"))
        page.locator(f"[data-metric=train_loss] {DRAWN_CHART}").first.wait_for(timeout=TIMEOUT_MS)
        train_loss_points = f"{SERIES_OF}(document.querySelector('[data-metric=train_loss] .plot'))[0].x.length"
        before = page.evaluate(f"(async () => {train_loss_points})()")
        until(page, f"{train_loss_points} > {before + 5}")
        # History and live tail meet without a gap or an overlap: the demo logs train_loss at
        # every step, so the chart holds each step from its first to its last exactly once.
        # (a point accepted just before the page joined the channel reaches the chart when
        # the page reads the history again, RECONCILE_MS after the join)
        until(page, f"(xs => xs.every((x, i) => x === xs[0] + i))({train_loss_points.removesuffix('.length')})")
    finally:
        demo.kill()
        demo.wait()


def test_learning_curves_grow_from_the_live_channel_without_reading_the_histories_again(
    browser_page: Any, ui_server: UiServer
) -> None:
    """The experiment page reads its curves whole once; after that each run's progress events
    extend them (a page reading 50 curves every second cost the server a query per run per second)."""
    page = browser_page
    experiment_id = api(
        ui_server,
        "/experiments",
        {"experiment": {"name": f"live curves {time.time_ns()}", "config": {"metric": "loss"}}},
    )["data"]["id"]
    api(ui_server, f"/experiments/{experiment_id}/start", {})
    run_ids = [f"run_live_{time.time_ns()}_{n}" for n in range(2)]

    def progress(run_id: str, steps: range) -> None:
        events = [
            {
                "event_name": ["crucible", "run", "progress"],
                "measurements": {"step": step, "loss": 1.0 / (1 + step)},
                "metadata": {"run_id": run_id, "experiment_id": experiment_id},
            }
            for step in steps
        ]
        api(ui_server, "/telemetry/events", {"events": events})

    for run_id in run_ids:
        progress(run_id, range(10))
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while (
        len([r for r in api(ui_server, f"/experiments/{experiment_id}/runs")["data"] if r["metrics"].get("loss")]) < 2
    ):
        assert time.monotonic() < deadline, "the runs were not folded"
        time.sleep(0.1)
    sign_in(page.context, ui_server.secret)
    history_reads: list[str] = []
    page.on("request", lambda request: history_reads.append(request.url) if "/metrics/" in request.url else None)
    page.goto(f"/experiments/{experiment_id}")
    until(page, f"{POINTS_ON_CHARTS} === 20")
    reads_at_first_draw = len(history_reads)
    for run_id in run_ids:
        progress(run_id, range(10, 15))
    until(page, f"{POINTS_ON_CHARTS} === 30")
    curves = page.evaluate(f"(async () => {SERIES_OF}(document.querySelector('.plot')))()")
    assert sorted(c["name"] for c in curves) == sorted(run_ids)
    assert all(c["x"] == list(range(15)) for c in curves)
    assert len(history_reads) == reads_at_first_draw == 2


def _wait_for_running_demo(server: UiServer) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = api(server, "/experiments?filter[status]=running&filter[tag]=demo")["data"]
        if running:
            runs = api(server, f"/experiments/{running[0]['id']}/runs")["data"]
            if runs and any(r["metrics"].get("val_accuracy") is not None for r in runs):
                return dict(running[0])
        time.sleep(0.2)
    raise TimeoutError("the demo experiment did not start")


def _points(page: Any) -> int:
    return int(page.evaluate(f"(async () => {POINTS_ON_CHARTS})()"))


def test_logs_filter_by_level_and_a_checkpoint_downloads_whole(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    runs = api(ui_server, f"/experiments/{demo_experiments(ui_server)[0]['id']}/runs")["data"]
    failed = next(r for r in runs if r["status"] == "failed")
    page.goto(f"/runs/{failed['id']}")
    assert "CUDA out of memory" in page.locator(".run-error").inner_text()
    page.locator(".logs .debug").first.wait_for()
    page.select_option("#log-level", "warning")
    page.wait_for_url(re.compile(r"\?level=warning$"))
    page.locator(".logs .error").first.wait_for()
    assert set(page.locator(".logs div").evaluate_all("lines => lines.map(l => l.className)")) <= {"warning", "error"}
    completed = next(r for r in runs if r["status"] == "completed")
    page.goto(f"/runs/{completed['id']}")
    link = page.locator("a:text-is('Download')").first
    with page.expect_download() as download:
        link.click()
    checkpoint = link.get_attribute("href")
    expected = page.context.request.get(checkpoint).body()
    assert Path(download.value.path()).read_bytes() == expected and len(expected) == 256 * 1024


def test_compare_two_experiments_and_download_the_latex(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    page.goto("/experiments?tag=demo&status=completed")
    boxes = page.locator("tbody input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("text=Compare selected (2)")
    page.wait_for_url(re.compile(r"/compare\?ids=exp_\w+,exp_\w+$"))
    report = page.frame_locator("iframe.report")
    report.locator("table").first.wait_for(timeout=TIMEOUT_MS)
    assert "val_accuracy" in report.locator("body").inner_text()
    with page.expect_download() as download:
        page.click("text=Download LaTeX")
    assert download.value.suggested_filename.endswith(".tex")
    latex = Path(download.value.path()).read_text(encoding="utf-8")
    assert "\\begin{tabular}" in latex or "\\begin{table}" in latex


def test_a_welch_t_test_shows_its_result_interpretation_and_assumption_checks(
    browser_page: Any, ui_server: UiServer
) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    ids = [e["id"] for e in demo_experiments(ui_server)[:2]]
    page.goto(f"/compare?ids={','.join(ids)}")
    page.select_option("select[name=test_type]", "welch_t_test")
    page.fill("input[name=metric]", "latency_ms")
    page.fill("input[name=groups]", "gpt-4, claude-3")
    page.click("text=Run test")
    result = page.locator(".outcome")
    result.wait_for(timeout=TIMEOUT_MS)
    text = result.inner_text()
    assert "p-value" in text and ("Significant" in text or "Not significant" in text)
    assert "Assumptions:" in text and "shapiro-wilk p" in text.lower()  # table headings show in capitals
    stored = api(ui_server, f"/experiments/{ids[0]}/statistical-results")["data"][0]
    assert stored["test_type"] == "welch_t_test" and stored["groups"] == ["gpt-4", "claude-3"]


P99_BY_MODEL = (
    "/telemetry/aggregate?metric=latency_ms&agg=p99&interval=5m&group_by=model"
    "&filter[event_name]=crucible.model.inference"
)


def test_explore_p99_latency_by_5_minutes_grouped_by_model(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    page.goto("/explore")
    page.fill("input[name=metric]", "latency_ms")
    page.select_option("select[name=agg]", "p99")
    page.select_option("select[name=interval]", "5m")
    page.fill("input[name=group_by]", "model")
    page.fill("input[name=event_name]", "crucible.model.inference")
    page.click("text=Show")
    page.wait_for_url(re.compile(r"/explore\?.*agg=p99"))
    # Events a finished demo sent may still be on their way into the warehouse: the page and
    # the API are compared on the same data, read again until two readings agree.
    for _ in range(5):
        page.locator(DRAWN_CHART).first.wait_for(timeout=TIMEOUT_MS)
        expected = api(ui_server, P99_BY_MODEL)["data"]
        rows = page.locator("#aggregate-numbers tbody tr").all_inner_texts()
        shown = sorted(tuple(row.split("\t")[1:]) for row in rows)
        if _same_numbers(shown, expected):
            break
        page.reload()
    assert shown and _same_numbers(shown, expected), (shown, expected)
    lines = page.evaluate(f"(async () => {SERIES_OF}(document.querySelector('.plot')).length)()")
    assert lines == len({p["group"] for p in expected})


def _same_numbers(shown: list[tuple[str, ...]], expected: list[dict[str, Any]]) -> bool:
    """The table's (group, number as the page writes it: dom.js `number`, 4 significant
    digits, JavaScript's toPrecision) against the API's points, each to those 4 digits."""
    want = sorted((p["group"], p["value"]) for p in expected)
    return len(shown) == len(want) and all(
        group == wanted_group and math.isclose(float(text.replace(",", "")), value, rel_tol=5e-4)
        for (group, text), (wanted_group, value) in zip(sorted(shown), want, strict=True)
    )


def test_a_read_only_key_sees_no_actions_and_is_shown_a_refusal(browser_page: Any, ui_server: UiServer) -> None:
    key = api(ui_server, "/api-keys", {"api_key": {"name": "reader", "scopes": ["read"]}})["data"]
    page = browser_page
    sign_in(page.context, key["secret"])
    page.goto("/experiments")
    page.locator("tbody tr").first.wait_for()
    assert page.locator("th:text-is('Actions')").count() == 0
    assert page.locator("text=New experiment").count() == 0
    ids = [e["id"] for e in demo_experiments(ui_server)[:2]]
    page.goto(f"/compare?ids={','.join(ids)}")
    page.fill("input[name=metric]", "latency_ms")
    shown = refusal_shown(page, 403, "/api/v1/statistical-results", "text=Run test")
    assert "403" in shown and "scope" in shown


def test_back_and_forward_redraw_the_pages_they_reach(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    page.goto("/")
    page.click("nav >> text=Experiments")
    page.wait_for_url(ui_server.url + "/experiments")
    page.click("tbody a[href^='/experiments/']")
    page.wait_for_url(re.compile(r"/experiments/exp_"))
    name = heading(page)
    page.go_back()
    page.wait_for_url(ui_server.url + "/experiments")
    until(page, "document.querySelector('main h1').textContent === 'Experiments'")
    page.go_forward()
    until(page, f"document.querySelector('main h1').textContent.startsWith({json.dumps(name[:20])})")


def test_models_are_created_and_show_their_usage_by_period(browser_page: Any, ui_server: UiServer) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    page.goto("/models")
    page.fill("#create-model input[name=name]", f"model {time.time_ns()}")
    page.fill("#create-model input[name=provider]", "openai")
    page.click("#create-model button[type=submit]")
    page.wait_for_url(re.compile(r"/models/"))
    page.locator("main table tbody tr").first.wait_for()
    periods = page.locator("main table tbody tr td:first-child").all_inner_texts()
    assert periods == ["1h", "24h", "7d", "30d"]


# Every control a keyboard can reach, numbered in page order (what Tab must visit).
NUMBER_CONTROLS = """() => {
  const selector = "a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex='-1'])";
  const shown = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden" && !e.disabled;
  const controls = [...document.querySelectorAll(selector)].filter(shown);
  controls.forEach((e, i) => (e.dataset.control = String(i)));
  return controls.length;
}"""
# The element that has the focus, inside the charts' shadow roots too (a chart's buttons live
# there): its own focus ring, the ring of the chart around it, and what the eye gets of it.
FOCUSED = """() => {
  let e = document.activeElement;
  let host = null; // the page's element whose shadow root holds the focus
  while (e && e.shadowRoot && e.shadowRoot.activeElement) {
    host = host || e;
    e = e.shadowRoot.activeElement;
  }
  const ring = (element) => {
    const style = getComputedStyle(element);
    return style.outlineStyle === "none" ? 0 : parseFloat(style.outlineWidth);
  };
  const up = (node) =>
    node.parentElement || (node.getRootNode() instanceof ShadowRoot ? node.getRootNode().host : null);
  let opacity = 1; // the element's and every ancestor's, across shadow roots
  for (let node = e; node; node = up(node)) opacity *= parseFloat(getComputedStyle(node).opacity);
  const chart = host && host.closest(".plot");
  return { control: host ? null : e.dataset.control ?? null, tool: host ? e.title || null : null, tag: e.tagName,
           className: String(e.className), width: ring(e), chartWidth: chart ? ring(chart) : 0, opacity };
}"""


@pytest.mark.parametrize("path", ["/experiments", "run"])
def test_every_control_is_reached_by_keyboard_with_a_visible_focus(
    browser_page: Any, ui_server: UiServer, path: str
) -> None:
    page = browser_page
    sign_in(page.context, ui_server.secret)
    if path == "run":
        runs = api(ui_server, f"/experiments/{demo_experiments(ui_server)[0]['id']}/runs")["data"]
        path = f"/runs/{runs[0]['id']}"
        page.goto(path)
        page.locator(DRAWN_CHART).first.wait_for(timeout=TIMEOUT_MS)
    else:
        page.goto(path)
        page.locator("tbody tr").first.wait_for()
    count = page.evaluate(NUMBER_CONTROLS)
    assert count > 5
    reached: set[str] = set()
    tools: set[str] = set()
    unseen_focus = []
    for _ in range(count + 100):  # a date field takes one Tab per part, a chart one per tool
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused["control"] is not None:
            reached.add(focused["control"])
        elif focused["tool"] is not None:
            tools.add(focused["tool"])
        elif focused["tag"] == "BODY":
            continue
        # A chart's plot area takes the focus too (the charting library's keyboard events):
        # the ring of the chart around it shows where it is. A button must show its own.
        own = focused["tool"] or focused["control"]
        ring = focused["width"] if own else max(focused["width"], focused["chartWidth"])
        if ring < 2 or focused["opacity"] < 0.5:
            unseen_focus.append(focused)
    assert reached == {str(i) for i in range(count)}, f"not reached by Tab: {count - len(reached)} of {count}"
    assert not unseen_focus, json.dumps(unseen_focus)
    if "/runs/" in path:
        assert tools >= {"Pan", "Box Zoom", "Wheel Zoom", "Reset", "Save", "Hover"}, tools
