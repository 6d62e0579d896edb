// One run: its metrics charted and extended live while it trains (telemetry:<experiment>,
// the run's progress events), its log with a level filter and a live tail, checkpoints to
// download, hyperparameters, and the error of a failed run.
import { api, describe, eventNameOf, metricHistory } from "/ui/api.js";
import { chartLibrary, extend, lineChart } from "/ui/charts.js";
import { add, h, number, percent, replace, statusBadge, table, when } from "/ui/dom.js";

const PROGRESS = "crucible.run.progress";
const LOG = "crucible.run.log";
const LEVELS = ["debug", "info", "warning", "error"];
const CHART_POINTS = 2000; // per metric: the server down-samples, keeping spikes
const LOG_TAIL = 200;
const RECONCILE_MS = 2500; // above the 202 → visible p99
const NOT_CHARTED = new Set(["step", "epoch", "progress", "current_epoch", "current_step"]);

export async function render(main, { params, query, socket, notify, setTitle, navigate, onLeave }) {
  chartLibrary().catch(() => {}); // loads while the data is asked for; a failure shows where a chart is drawn
  const run = (await api(`/runs/${encodeURIComponent(params.id)}`)).data;
  const level = LEVELS.includes(query.get("level")) ? query.get("level") : "debug";
  // The histories and the log are asked for before anything is drawn: the page's first
  // view waits on them, and laying the page out (its first dates load the locale's data)
  // takes tens of milliseconds.
  const askHistory = (name) => metricHistory(run.id, name, CHART_POINTS);
  const names = Object.keys(run.metrics).filter((m) => !NOT_CHARTED.has(m)).sort();
  const historiesAsked = names.map(askHistory);
  const logsAsked = api(`/runs/${encodeURIComponent(run.id)}/logs`, { params: { tail: LOG_TAIL, level } });
  for (const asked of [...historiesAsked, logsAsked]) asked.catch(() => {}); // failures are shown where awaited
  setTitle(`Run ${run.id}`);
  const status = h("span", {}, statusBadge(run.status));
  const progressBar = h("progress", { max: 1, value: run.progress, "aria-label": "progress" });
  const progressText = h("span", {}, percent(run.progress));
  const charts = h("div", { class: "charts" });
  const logBox = h("div", { class: "logs", role: "log", "aria-live": "off", tabindex: 0, "aria-label": "run log" });
  const levelChoice = h(
    "select",
    { id: "log-level" },
    LEVELS.map((l) => h("option", { value: l, selected: l === level }, `${l} and above`)),
  );
  levelChoice.addEventListener("change", () => navigate(`/runs/${encodeURIComponent(run.id)}${levelChoice.value === "debug" ? "" : `?level=${levelChoice.value}`}`, { replaceState: true }));

  add(main, 
    h("p", {}, h("a", { href: `/experiments/${encodeURIComponent(run.experiment_id)}` }, "← Experiment")),
    h("h1", {}, `Run ${run.id} `, status),
    h("div", { class: "row" }, progressBar, progressText),
    run.error ? h("div", { class: "notice run-error" }, h("strong", {}, "Failed: "), run.error) : null,
    h("h2", {}, "Metrics"),
    charts,
    h("h2", {}, "Hyperparameters"),
    h("pre", { class: "json" }, JSON.stringify(run.hyperparameters, null, 2)),
    h("h2", {}, "Log"),
    h("div", { class: "row" }, h("label", { for: "log-level" }, "Level", levelChoice)),
    logBox,
    h("h2", {}, "Checkpoints"),
    checkpointTable(run),
    h("p", { class: "muted" }, `Started ${when(run.started_at)}; completed ${when(run.completed_at)}.`),
  );

  // Live points come from the log, ahead of the warehouse the histories are read from (by
  // the writer's lag, well under RECONCILE_MS). Each chart is its history plus the live
  // points after it. The channel is joined while the histories are read, not before (a
  // round trip less before the first chart); a point accepted around the join can be in
  // neither, so once the charts are drawn, and after each join that ends later (the first,
  // or one after a reconnect), the page reads the histories again once the writer has
  // caught up.
  const live = run.status === "running" || run.status === "pending";
  const channel = live ? socket.channel(`telemetry:${run.experiment_id}`, { event_types: [PROGRESS, LOG] }) : null;
  const metricsOf = new Map(); // metric → { box, plot, drawing, history: {x, y}, tail: [{x, y}] since it }
  let drawn = false;
  let onLine = null; // set once the log's history is shown
  const earlyLines = [];
  const reported = (promise) => promise.catch((error) => notify(describe(error)));
  const reconcileSoon = () => setTimeout(() => reported(reconcile()), RECONCILE_MS);
  if (channel) {
    channel.on("event", (event) => {
      if ((event.metadata || {}).run_id === run.id) liveEvent(event);
    });
    channel.on("joined", () => {
      if (drawn) reconcileSoon();
    });
    onLeave(() => channel.leave());
    channel.join();
  }

  const chart = (name) => {
    if (!metricsOf.has(name)) {
      const box = h("div", { class: "panel", dataset: { metric: name } });
      charts.append(box);
      metricsOf.set(name, { box, plot: null, drawing: false, history: { x: [], y: [] }, tail: [] });
    }
    return metricsOf.get(name);
  };
  const lastOf = (xs) => (xs.length ? xs[xs.length - 1] : -Infinity);
  const drawChart = async (name) => {
    const m = chart(name);
    const after = lastOf(m.history.x);
    m.tail = m.tail.filter((p) => p.x > after);
    const series = [{ name, x: m.history.x.concat(m.tail.map((p) => p.x)), y: m.history.y.concat(m.tail.map((p) => p.y)) }];
    m.drawing = true;
    m.plot = await lineChart(m.box, series, chartLabels(name));
    m.drawing = false;
    const missed = m.tail.filter((p) => p.x > lastOf(series[0].x)); // arrived while it was drawn
    if (missed.length) await extend(m.plot, missed.map((p) => [0, p]));
  };
  const readHistory = async (name, asked = askHistory(name)) => {
    chart(name).history = await asked;
    await drawChart(name);
  };
  const reconcile = () => Promise.all([...metricsOf.keys()].map((name) => readHistory(name)));

  function liveEvent(event) {
    const metadata = event.metadata || {};
    if (eventNameOf(event) === LOG) {
      const line = { timestamp: event.timestamp, level: metadata.level, message: metadata.message };
      if (LEVELS.indexOf(line.level) < LEVELS.indexOf(level)) return;
      if (onLine) onLine(line);
      else earlyLines.push(line);
      return;
    }
    const measurements = event.measurements || {};
    if (measurements.progress !== undefined) {
      progressBar.value = measurements.progress;
      progressText.textContent = percent(measurements.progress);
    }
    const x = measurements.step ?? 0;
    for (const [name, y] of Object.entries(measurements)) {
      if (NOT_CHARTED.has(name)) continue;
      const m = chart(name);
      const last = Math.max(lastOf(m.history.x), m.tail.length ? m.tail[m.tail.length - 1].x : -Infinity);
      m.tail.push({ x, y });
      if (!drawn || m.drawing) continue;
      if (m.plot === null) reported(drawChart(name)); // a metric reported for the first time
      else if (x > last) reported(extend(m.plot, [[0, { x, y }]]));
    }
  }

  // Each chart's frame is laid out while its history is on the way (the charting library's
  // first layout takes a fifth of a second); the history then lands in it.
  for (const name of names) reported(lineChart(chart(name).box, [{ name, x: [], y: [] }], chartLabels(name)));
  await Promise.all(names.map((name, i) => readHistory(name, historiesAsked[i])));
  await Promise.all([...metricsOf.keys()].filter((name) => metricsOf.get(name).plot === null).map(drawChart));
  drawn = true;
  if (metricsOf.size === 0) charts.append(h("p", { class: "muted" }, "No metrics reported yet."));
  if (channel) reconcileSoon();

  const lines = (await logsAsked).data;
  const shownLines = new Set(lines.map(lineKey));
  const addLine = (line) => {
    logBox.append(h("div", { class: line.level }, `${line.timestamp}  ${line.level.toUpperCase().padEnd(7)} ${line.message}`));
    while (logBox.childElementCount > 2000) logBox.firstElementChild.remove();
    logBox.scrollTop = logBox.scrollHeight;
  };
  lines.forEach(addLine);
  if (lines.length === 0) logBox.append(h("div", { class: "muted" }, "No log lines at this level yet."));
  earlyLines.filter((line) => !shownLines.has(lineKey(line))).forEach(addLine);
  onLine = addLine;
  return null;
}

function chartLabels(metric) {
  return { title: metric, xTitle: "step", yTitle: metric };
}

// A log line as both the log endpoint and the channel give it (their timestamps may differ
// in how many fraction digits they write, not in the instant).
function lineKey(line) {
  return `${Date.parse(line.timestamp)}|${line.level}|${line.message}`;
}

function checkpointTable(run) {
  return table(
    [
      ["Checkpoint", (c) => c.id],
      ["Epoch", (c) => number(c.epoch), "num"],
      ["Metrics", (c) => Object.entries(c.metrics).map(([k, v]) => `${k} ${number(v)}`).join(", ")],
      ["Size", (c) => (c.size === null || c.size === undefined ? "—" : `${number(c.size)} B`), "num"],
      [
        "",
        (c) =>
          c.uploaded
            ? h("a", { href: `/api/v1/runs/${encodeURIComponent(run.id)}/checkpoints/${encodeURIComponent(c.id)}/download`, download: "" }, "Download")
            : h("span", { class: "muted" }, "not uploaded"),
      ],
    ],
    run.checkpoints,
  );
}
