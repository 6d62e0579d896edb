// Charts drawn by plotly.js (served from the installed plotly package, loaded on the first
// page that draws one), each with a table of its numbers for keyboards and screen readers.
import { h, number, replace } from "/ui/dom.js";

// Okabe-Ito: distinct under the common colour-vision deficiencies; with dashes, 32 series
// stay apart before a style repeats.
export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];
const DASHES = ["solid", "dash", "dot", "dashdot"];
const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud"] };

let loading = null;

export function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (loading === null) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/ui/vendor/plotly.min.js";
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => reject(new Error("the charting library did not load"));
      document.head.append(script);
    });
  }
  return loading;
}

export function styleOf(index) {
  return { color: PALETTE[index % PALETTE.length], dash: DASHES[Math.floor(index / PALETTE.length) % DASHES.length] };
}

// series: [{name, x: [], y: []}]; a table of the same numbers follows the chart.
export async function lineChart(container, series, { title, xTitle, yTitle, xType } = {}) {
  const Plotly = await plotly();
  const traces = series.map((s, i) => ({
    type: s.x.length > 5000 ? "scattergl" : "scatter",
    mode: "lines",
    name: s.name,
    x: s.x,
    y: s.y,
    line: { width: 1.5, ...styleOf(i) },
  }));
  const layout = {
    title: title ? { text: title } : undefined,
    margin: { t: title ? 40 : 10, r: 10, b: 40, l: 60 },
    xaxis: { title: { text: xTitle || "" }, type: xType },
    yaxis: { title: { text: yTitle || "" } },
    legend: { orientation: "h" },
    uirevision: "keep", // the user's zoom survives live redraws
  };
  let plot = container.querySelector(".plot");
  let numbers = container.querySelector("details.table-view");
  if (!plot) {
    plot = h("div", { class: "plot chart", role: "img", "aria-label": title || yTitle || "chart" });
    numbers = h("details", { class: "table-view" });
    container.append(plot, numbers);
  }
  await Plotly.react(plot, traces, layout, CONFIG);
  replace(numbers, h("summary", {}, "Table of these numbers"), numbersTable(series, xTitle, yTitle));
  return plot;
}

function numbersTable(series, xTitle, yTitle) {
  const shown = 200; // the table is for reading, not a second download
  return h(
    "div",
    {},
    series.map((s) =>
      h(
        "table",
        {},
        h("caption", {}, `${s.name}: ${s.x.length} points${s.x.length > shown ? `, last ${shown} shown` : ""}`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, xTitle || "x"), h("th", { scope: "col" }, yTitle || "y"))),
        h(
          "tbody",
          {},
          lastPoints(s, shown).map(([x, y]) => h("tr", {}, h("td", {}, number(x)), h("td", { class: "num" }, number(y)))),
        ),
      ),
    ),
  );
}

function lastPoints(s, count) {
  const ys = s.y.slice(-count);
  return s.x.slice(-count).map((x, i) => [x, ys[i]]);
}

// Append points to the open chart without redrawing it (live updates).
export async function extend(plot, points) {
  const Plotly = await plotly();
  const indices = [];
  const xs = [];
  const ys = [];
  for (const [index, { x, y }] of points) {
    indices.push(index);
    xs.push([x]);
    ys.push([y]);
  }
  if (indices.length) await Plotly.extendTraces(plot, { x: xs, y: ys }, indices);
}
