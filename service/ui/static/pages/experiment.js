// One experiment: status and progress live (experiment:<id>), its config, runs and their
// latest metrics, learning curves of any metric across its runs, results, history (and the
// experiment as of any instant), statistical results, and exports.
import { api, describe, eventNameOf, metricHistory } from "/ui/api.js";
import { chartLibrary, extend, lineChart } from "/ui/charts.js";
import { downloadFrom } from "/ui/download.js";
import { ACTIONS } from "/ui/pages/experiments.js";
import { add, duration, h, number, percent, replace, statusBadge, table, when } from "/ui/dom.js";

const CURVE_POINTS = 1000; // per run: the server down-samples, keeping spikes
const MAX_CURVES = 50;
const REFRESH_MS = 1000;
const PROGRESS = "crucible.run.progress";
// The curves are read whole when the runs on them or the metric change, and every
// CURVES_RECONCILE_MS (a point accepted as the channel was joined, or while it was
// reconnecting, is in neither); in between they grow from the runs' progress events.
// Reading 50 curves every second cost the server a query per run per second.
const CURVES_RECONCILE_MS = 30_000;
const LIVE_FLUSH_MS = 250; // live points are added to the chart in batches, not one draw each

export async function render(main, { params, query, socket, notify, can, setTitle, navigate }) {
  chartLibrary().catch(() => {}); // loads while the data is asked for; a failure shows where a chart is drawn
  const id = params.id;
  const asOf = query.get("as_of");
  const answer = await api(`/experiments/${encodeURIComponent(id)}`, { params: { as_of: asOf } });
  let experiment = answer.data;
  setTitle(experiment.name);

  const status = h("span", {}, statusBadge(experiment.status));
  const progressBar = h("progress", { max: 1, value: experiment.progress, "aria-label": "progress" });
  const progressText = h("span", {}, percent(experiment.progress));
  const eta = h("span", { class: "muted" });
  const runsBox = h("div");
  const curves = h("div", { class: "panel" });
  const metricChoice = h("select", { id: "curve-metric" });
  const results = h("div");
  const history = h("div");
  const statistics = h("div");

  add(main, 
    h("p", {}, h("a", { href: "/experiments" }, "← Experiments")),
    h("h1", {}, experiment.name, " ", status),
    asOf ? h("p", { class: "notice info" }, `As of ${when(asOf)}: the experiment as it was then. `, h("a", { href: `/experiments/${encodeURIComponent(id)}` }, "Back to now")) : null,
    h("p", { class: "muted" }, experiment.description || ""),
    h("div", { class: "row" }, progressBar, progressText, eta),
    can("write") && !asOf ? actions(experiment, notify, navigate) : null,
    h("div", { class: "row" }, exportButton(id, "json", notify), exportButton(id, "zip", notify)),
    h("h2", {}, "Config"),
    h("pre", { class: "json" }, JSON.stringify(experiment.config, null, 2)),
    h("h2", {}, "Results"),
    results,
    h("h2", {}, "Runs"),
    runsBox,
    h("h2", {}, "Learning curves"),
    h("div", { class: "row" }, h("label", { for: "curve-metric" }, "Metric", metricChoice)),
    curves,
    h("h2", {}, "Statistical results"),
    statistics,
    h("h2", {}, "History"),
    history,
  );

  let runs = [];
  const drawRuns = async () => {
    runs = (await api(`/experiments/${encodeURIComponent(id)}/runs`, { params: { per_page: 100 } })).data;
    const metricNames = [...new Set(runs.flatMap((r) => Object.keys(r.metrics)))].filter((m) => m !== "current_epoch" && m !== "current_step").sort();
    const wanted = metricChoice.value || experiment.config.metric || metricNames[0];
    replace(metricChoice, metricNames.map((m) => h("option", { value: m, selected: m === wanted }, m)));
    replace(
      runsBox,
      table(
        [
          ["Run", (r) => h("a", { href: `/runs/${encodeURIComponent(r.id)}` }, r.id)],
          ["Status", (r) => statusBadge(r.status)],
          ["Progress", (r) => h("progress", { max: 1, value: r.progress, "aria-label": `${r.id} progress ${percent(r.progress)}` })],
          ...metricNames.slice(0, 6).map((m) => [m, (r) => number(r.metrics[m]), "num"]),
          ["Started", (r) => when(r.started_at)],
        ],
        runs,
      ),
    );
  };
  // What the chart shows: its metric, its runs in series order, each one's highest step,
  // and live points not yet added (or that arrived while it was read whole).
  const shownCurves = { metric: null, runIds: [], lastX: [], plot: null, readAt: 0, reading: false, pending: [] };
  const drawCurves = async () => {
    const metric = metricChoice.value;
    if (!metric) {
      replace(curves, h("p", { class: "muted" }, "No metrics reported yet."));
      return;
    }
    const shown = runs.slice(0, MAX_CURVES);
    shownCurves.reading = true;
    try {
      const histories = await Promise.all(shown.map((r) => metricHistory(r.id, metric, CURVE_POINTS)));
      const series = histories.map((history, i) => ({ name: shown[i].id, ...history }));
      Object.assign(shownCurves, {
        metric,
        runIds: series.map((s) => s.name),
        lastX: series.map((s) => (s.x.length ? s.x[s.x.length - 1] : -Infinity)),
        plot: await lineChart(curves, series, { xTitle: "step", yTitle: metric }),
        readAt: Date.now(),
      });
    } finally {
      shownCurves.reading = false;
    }
    await addLivePoints();
  };
  const curvesOutOfDate = () =>
    metricChoice.value !== shownCurves.metric ||
    runs.slice(0, MAX_CURVES).map((r) => r.id).join("\n") !== shownCurves.runIds.join("\n") ||
    Date.now() - shownCurves.readAt >= CURVES_RECONCILE_MS;
  let flushing = null;
  const addLivePoints = async () => {
    if (shownCurves.reading || shownCurves.plot === null) return;
    const points = [];
    for (const { metric, runId, x, y } of shownCurves.pending.splice(0)) {
      const index = shownCurves.runIds.indexOf(runId);
      if (metric !== shownCurves.metric || index < 0 || x <= shownCurves.lastX[index]) continue; // not on the chart, or in it already
      shownCurves.lastX[index] = x;
      points.push([index, { x, y }]);
    }
    if (points.length) await extend(shownCurves.plot, points);
  };
  const livePoint = (event) => {
    const measurements = event.measurements || {};
    const y = measurements[shownCurves.metric];
    if (eventNameOf(event) !== PROGRESS || typeof y !== "number") return;
    shownCurves.pending.push({ metric: shownCurves.metric, runId: (event.metadata || {}).run_id, x: measurements.step ?? 0, y });
    flushing ??= setTimeout(() => {
      flushing = null;
      addLivePoints().catch((error) => notify(describe(error)));
    }, LIVE_FLUSH_MS);
  };
  const drawResults = () => {
    const summary = experiment.results_summary;
    replace(
      results,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, `Best ${summary.metric}`),
        h("dd", {}, number(summary.best_accuracy)),
        h("dt", {}, "Runs"),
        h("dd", {}, `${summary.total_runs} (${summary.completed_runs} completed, ${summary.failed_runs} failed)`),
        h("dt", {}, "Started"),
        h("dd", {}, when(experiment.started_at)),
        h("dt", {}, "Completed"),
        h("dd", {}, when(experiment.completed_at)),
        experiment.error ? [h("dt", {}, "Error"), h("dd", {}, experiment.error)] : null,
      ),
    );
  };
  const drawHistory = async () => {
    const entries = (await api(`/experiments/${encodeURIComponent(id)}/history`, { params: { per_page: 100 } })).data;
    replace(
      history,
      table(
        [
          ["When", (e) => when(e.at)],
          ["Event", (e) => e.type],
          ["By", (e) => e.actor],
          ["Changes", (e) => JSON.stringify(e.changes)],
          ["", (e) => h("a", { href: `/experiments/${encodeURIComponent(id)}?as_of=${encodeURIComponent(e.at)}` }, "as of then")],
        ],
        entries,
      ),
    );
  };
  const drawStatistics = async () => {
    const found = (await api(`/experiments/${encodeURIComponent(id)}/statistical-results`, { params: { per_page: 50 } })).data;
    replace(
      statistics,
      table(
        [
          ["Test", (r) => r.test_type],
          ["Metric", (r) => r.metric || "—"],
          ["p-value", (r) => number(r.p_value), "num"],
          ["Interpretation", (r) => r.interpretation || ""],
          ["When", (r) => when(r.created_at)],
        ],
        found,
      ),
    );
  };

  metricChoice.addEventListener("change", () => drawCurves().catch((error) => notify(describe(error))));
  drawResults();
  await drawRuns();
  await Promise.all([drawCurves(), drawHistory(), drawStatistics()]);
  if (asOf) return null;

  // Live: the status and progress come pushed; runs and curves follow, at most once a second.
  let refresh = null;
  const refreshSoon = () => {
    if (refresh !== null) return;
    refresh = setTimeout(async () => {
      refresh = null;
      try {
        experiment = (await api(`/experiments/${encodeURIComponent(id)}`)).data;
        drawResults();
        await drawRuns();
        if (curvesOutOfDate()) await drawCurves();
      } catch (error) {
        notify(describe(error));
      }
    }, REFRESH_MS);
  };
  const channel = socket.channel(`experiment:${id}`);
  channel.on("status_changed", (change) => {
    replace(status, statusBadge(change.status));
    refreshSoon();
    drawHistory().catch(() => {});
  });
  channel.on("progress_updated", (change) => {
    progressBar.value = change.progress;
    progressText.textContent = percent(change.progress);
    eta.textContent = change.eta_seconds === null || change.eta_seconds === undefined ? "" : `ETA ${duration(change.eta_seconds)}`;
    refreshSoon();
  });
  channel.on("run_completed", refreshSoon);
  channel.on("run_status_changed", refreshSoon); // a run started, ended, timed out or was heard again
  channel.join();
  const telemetry = socket.channel(`telemetry:${id}`, { event_types: [PROGRESS] });
  telemetry.on("event", livePoint);
  telemetry.join();
  return () => {
    clearTimeout(refresh);
    clearTimeout(flushing);
    channel.leave();
    telemetry.leave();
  };
}

function actions(experiment, notify, navigate) {
  const act = async (action) => {
    try {
      await api(`/experiments/${encodeURIComponent(experiment.id)}/${action}`, { method: "POST" });
      notify(`${action}: done.`, "info");
      navigate(location.pathname, { replaceState: true });
    } catch (error) {
      notify(`${action} refused: ${describe(error)}`);
    }
  };
  return h(
    "div",
    { class: "actions" },
    (ACTIONS[experiment.status] || []).map((action) => h("button", { type: "button", onclick: () => act(action) }, action)),
  );
}

// Exports answer the file itself; it is saved under the name the server gives.
function exportButton(id, format, notify) {
  const save = () =>
    downloadFrom(`/experiments/${encodeURIComponent(id)}/export`, { format }, `${id}.${format}`).catch((error) =>
      notify(`Export failed: ${describe(error)}`),
    );
  return h("button", { type: "button", onclick: save }, `Export ${format.toUpperCase()}`);
}
