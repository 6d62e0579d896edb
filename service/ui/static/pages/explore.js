// Telemetry explorer: a measurement aggregated by interval and group under filters (all in
// the URL), as a chart and a table of the same numbers, and a live stream of the matching
// events from telemetry:<experiment|all>.
import { api, describe, eventNameOf, query as toQuery } from "/ui/api.js";
import { chartLibrary, lineChart } from "/ui/charts.js";
import { add, h, number, replace, table, when } from "/ui/dom.js";

const AGGREGATES = ["count", "avg", "sum", "min", "max", "p50", "p95", "p99"];
const INTERVALS = ["1m", "5m", "1h", "1d"];
const FIELDS = ["metric", "agg", "interval", "group_by", "event_name", "experiment_id", "run_id", "model", "after", "before"];
const STREAM_LINES = 50;

export async function render(main, { query, navigate, socket, notify, setTitle }) {
  chartLibrary().catch(() => {}); // loads while the data is asked for; a failure shows where a chart is drawn
  setTitle("Telemetry");
  const view = Object.fromEntries(FIELDS.map((f) => [f, query.get(f) || ""]));
  view.agg = view.agg || "p99";
  view.interval = view.interval || "5m";
  const input = (name, label, attributes = {}) => h("label", {}, label, h("input", { name, value: view[name], ...attributes }));
  const choice = (name, label, options) =>
    h("label", {}, label, h("select", { name }, options.map((o) => h("option", { value: o, selected: view[name] === o }, o || "none"))));
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Telemetry query" },
    input("metric", "Measurement", { placeholder: "latency_ms" }),
    choice("agg", "Aggregate", AGGREGATES),
    choice("interval", "Interval", INTERVALS),
    input("group_by", "Group by", { placeholder: "model or metadata.key" }),
    input("event_name", "Event name", { placeholder: "crucible.model.inference" }),
    input("experiment_id", "Experiment"),
    input("run_id", "Run"),
    input("model", "Model"),
    input("after", "After (ISO 8601)"),
    input("before", "Before (ISO 8601)"),
    h("button", { type: "submit", class: "primary" }, "Show"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    navigate(`/explore${toQuery(data)}`);
  });
  const chart = h("div", { class: "panel" });
  const numbers = h("div", { id: "aggregate-numbers" });
  const stream = h("ol", { class: "logs", "aria-label": "live events", reversed: true });
  add(main, h("h1", {}, "Telemetry explorer"), form, chart, h("h2", {}, "Numbers"), numbers, h("h2", {}, "Live events"), stream);

  if (view.metric || view.agg === "count") {
    const params = { agg: view.agg, metric: view.metric, interval: view.interval, group_by: view.group_by };
    for (const f of ["event_name", "experiment_id", "run_id", "model", "after", "before"]) {
      if (view[f]) params[`filter[${f}]`] = view[f];
    }
    try {
      const rows = (await api("/telemetry/aggregate", { params })).data;
      const groups = new Map();
      for (const row of rows) {
        const key = row.group ?? view.agg;
        if (!groups.has(key)) groups.set(key, { name: String(key), x: [], y: [] });
        groups.get(key).x.push(row.timestamp);
        groups.get(key).y.push(row.value);
      }
      await lineChart(chart, [...groups.values()], { xTitle: "time", yTitle: `${view.agg}(${view.metric || "events"})`, xType: "date" });
      replace(
        numbers,
        table(
          [["Time", (r) => when(r.timestamp)], view.group_by ? ["Group", (r) => r.group] : null, ["Value", (r) => number(r.value), "num"]].filter(Boolean),
          rows,
          `${rows.length} points`,
        ),
      );
    } catch (error) {
      notify(describe(error));
      replace(chart, h("p", {}, describe(error)));
    }
  } else {
    replace(chart, h("p", { class: "muted" }, "Choose a measurement (or the count aggregate) and press Show."));
  }

  const topic = `telemetry:${view.experiment_id || "all"}`;
  const channel = socket.channel(topic, view.event_name ? { event_types: [view.event_name] } : {});
  channel.on("event", (event) => {
    if (view.run_id && (event.metadata || {}).run_id !== view.run_id) return;
    if (view.model && (event.metadata || {}).model !== view.model) return;
    const measurements = Object.entries(event.measurements || {}).map(([k, v]) => `${k}=${number(v)}`).join(" ");
    stream.prepend(h("li", {}, `${event.timestamp}  ${eventNameOf(event)}  ${measurements}`));
    while (stream.childElementCount > STREAM_LINES) stream.lastElementChild.remove();
  });
  channel.join();
  return () => channel.leave();
}
