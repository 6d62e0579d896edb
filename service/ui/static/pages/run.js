// One run: its metrics charted and extended live while it trains (telemetry:<experiment>,
// the run's progress events), its log with a level filter and a live tail, checkpoints to
// download, hyperparameters, and the error of a failed run.
import { api, describe, eventNameOf } from "/ui/api.js";
import { extend, lineChart, plotly } from "/ui/charts.js";
import { add, h, number, percent, replace, statusBadge, table, when } from "/ui/dom.js";

const PROGRESS = "crucible.run.progress";
const LOG = "crucible.run.log";
const LEVELS = ["debug", "info", "warning", "error"];
const CHART_POINTS = 2000; // per metric: the server down-samples, keeping spikes
const LOG_TAIL = 200;
const NOT_CHARTED = new Set(["step", "epoch", "progress", "current_epoch", "current_step"]);

export async function render(main, { params, query, socket, notify, setTitle, navigate }) {
  plotly().catch(() => {}); // loads while the data is asked for; a failure shows where a chart is drawn
  const run = (await api(`/runs/${encodeURIComponent(params.id)}`)).data;
  setTitle(`Run ${run.id}`);
  const level = LEVELS.includes(query.get("level")) ? query.get("level") : "debug";
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

  // One chart per metric; each keeps its index so live points land on the right one.
  const names = Object.keys(run.metrics).filter((m) => !NOT_CHARTED.has(m)).sort();
  const plots = new Map();
  await Promise.all(
    names.map(async (name) => {
      const box = h("div", { class: "panel", dataset: { metric: name } });
      charts.append(box);
      const history = (await api(`/runs/${encodeURIComponent(run.id)}/metrics/${encodeURIComponent(name)}`, { params: { max_points: CHART_POINTS } })).data;
      const series = [{ name, x: history.points.map((p, i) => (p.step === null ? i : p.step)), y: history.points.map((p) => p.value) }];
      plots.set(name, await lineChart(box, series, { title: name, xTitle: "step", yTitle: name }));
    }),
  );
  if (names.length === 0) charts.append(h("p", { class: "muted" }, "No metrics reported yet."));

  const lines = (await api(`/runs/${encodeURIComponent(run.id)}/logs`, { params: { tail: LOG_TAIL, level } })).data;
  const addLine = (line) => {
    logBox.append(h("div", { class: line.level }, `${line.timestamp}  ${line.level.toUpperCase().padEnd(7)} ${line.message}`));
    while (logBox.childElementCount > 2000) logBox.firstElementChild.remove();
    logBox.scrollTop = logBox.scrollHeight;
  };
  lines.forEach(addLine);
  if (lines.length === 0) logBox.append(h("div", { class: "muted" }, "No log lines at this level yet."));

  if (run.status !== "running" && run.status !== "pending") return null;
  const channel = socket.channel(`telemetry:${run.experiment_id}`, { event_types: [PROGRESS, LOG] });
  channel.on("event", (event) => {
    const metadata = event.metadata || {};
    if (metadata.run_id !== run.id) return;
    if (eventNameOf(event) === LOG) {
      if (LEVELS.indexOf(metadata.level) >= LEVELS.indexOf(level)) {
        addLine({ timestamp: event.timestamp, level: metadata.level, message: metadata.message });
      }
      return;
    }
    const measurements = event.measurements || {};
    if (measurements.progress !== undefined) {
      progressBar.value = measurements.progress;
      progressText.textContent = percent(measurements.progress);
    }
    for (const [name, value] of Object.entries(measurements)) {
      const plot = plots.get(name);
      if (plot) extend(plot, [[0, { x: measurements.step ?? 0, y: value }]]).catch((error) => notify(describe(error)));
    }
  });
  channel.join();
  return () => channel.leave();
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
