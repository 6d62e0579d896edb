// Charts drawn by BokehJS (served from the installed bokeh package, loaded on the first page
// that draws one), each with a table of its numbers for keyboards and screen readers.
import { h, number, replace } from "/ui/dom.js";

// Okabe-Ito: distinct under the common colour-vision deficiencies; with dashes, 32 series
// stay apart before a style repeats.
export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];
const DASHES = ["solid", "dashed", "dotted", "dashdot"];
const LIBRARY = ["/ui/vendor/bokeh.min.js", "/ui/vendor/bokeh-api.min.js"];
const HEIGHT = 320;
const TOOLS = "pan,box_zoom,wheel_zoom,reset,save";
const MARKED_UP_TO = 200; // points in a series: below this each point also gets a marker
const TOOLBAR_FOCUS = ":focus-visible { outline: 3px solid #CC79A7; outline-offset: 1px; }";

let loading = null;

// Both files are fetched at once and run in order (bokeh-api extends bokeh).
export function chartLibrary() {
  if (window.Bokeh && window.Bokeh.Plotting) return Promise.resolve(window.Bokeh);
  if (loading === null) {
    loading = new Promise((resolve, reject) => {
      for (const [index, src] of LIBRARY.entries()) {
        const script = document.createElement("script");
        script.src = src;
        script.async = false; // execution in document order, downloads in parallel
        script.onerror = () => reject(new Error("the charting library did not load"));
        if (index === LIBRARY.length - 1) script.onload = () => resolve(window.Bokeh);
        document.head.append(script);
      }
    });
  }
  return loading;
}

export function styleOf(index) {
  return { color: PALETTE[index % PALETTE.length], dash: DASHES[Math.floor(index / PALETTE.length) % DASHES.length] };
}

// Each chart element's figure: {names, sources, view} once shown; `pending` holds the latest
// draw asked for, so draws of one chart run in the order they were asked for.
const shownCharts = new WeakMap();
const pendingCharts = new WeakMap();

// The series a chart shows now ([{name, x, y}]), live points included; tests read them.
export function seriesOf(plot) {
  const chart = shownCharts.get(plot);
  if (!chart) return [];
  return chart.names.map((name, i) => ({ name, x: [...chart.sources[i].data.x], y: [...chart.sources[i].data.y] }));
}

// series: [{name, x: [], y: []}]; a table of the same numbers follows the chart. Drawn again
// with the same series names, the chart keeps its figure and the user's zoom, and only its
// data changes: a page can draw a chart's frame (empty series) while its data is on the
// way, and the data lands in it without the figure being laid out again.
export async function lineChart(container, series, { title, xTitle, yTitle, xType } = {}) {
  const Bokeh = await chartLibrary();
  const dates = xType === "date";
  const columns = series.map((s) => ({ x: dates ? s.x.map((x) => Date.parse(x)) : s.x, y: s.y }));
  let plot = container.querySelector(".plot");
  let numbers = container.querySelector("details.table-view");
  if (!plot) {
    plot = h("div", { class: "plot chart", role: "figure", "aria-label": title || yTitle || "chart" });
    numbers = h("details", { class: "table-view" });
    container.append(plot, numbers);
  }
  const before = pendingCharts.get(plot);
  const drawing = (async () => {
    await before;
    const chart = shownCharts.get(plot);
    const names = series.map((s) => s.name);
    if (chart && chart.names.join("\n") === names.join("\n")) {
      chart.sources.forEach((source, i) => {
        source.data = columns[i];
      });
      markFewPoints(chart);
      return;
    }
    const { figure, sources, markers } = newFigure(Bokeh, series, columns, { title, xTitle, yTitle, dates });
    if (chart) chart.view.remove();
    plot.replaceChildren();
    const shown = { names, sources, markers, view: await Bokeh.Plotting.show(figure, plot) };
    markFewPoints(shown);
    shownCharts.set(plot, shown);
  })();
  pendingCharts.set(plot, drawing.catch(() => {}));
  await drawing;
  plot.dataset.points = String(series.reduce((total, s) => total + s.x.length, 0));
  replace(numbers, h("summary", {}, "Table of these numbers"), numbersTable(series, xTitle, yTitle));
  return plot;
}

function newFigure(Bokeh, series, columns, { title, xTitle, yTitle, dates }) {
  const figure = Bokeh.Plotting.figure({
    title: title || null,
    height: HEIGHT,
    sizing_mode: "stretch_width",
    x_axis_type: dates ? "datetime" : "linear",
    x_axis_label: xTitle || null,
    y_axis_label: yTitle || null,
    tools: TOOLS,
    toolbar_location: "right", // beside the plot every tool fits; above, beside a title, some hide in a menu
  });
  figure.toolbar.logo = null;
  // The toolbar's buttons live in its shadow root, out of reach of style.css: the focus ring
  // every other control has (Bokeh's own is a 1 px dotted line).
  figure.toolbar.stylesheets = [TOOLBAR_FOCUS];
  if (!dates) figure.xaxis.formatter = new Bokeh.NumeralTickFormatter({ format: "0,0.[00]" }); // 200,000 steps, not 2.000e+5
  const sources = columns.map((data) => new Bokeh.ColumnDataSource({ data }));
  const markers = []; // each series' point markers, shown while it has few points
  const items = series.map((s, i) => {
    const { color, dash } = styleOf(i);
    const source = sources[i];
    const line = figure.line({ field: "x" }, { field: "y" }, { source, line_color: color, line_dash: dash, line_width: 1.5, name: s.name });
    markers.push(figure.scatter({ field: "x" }, { field: "y" }, { source, size: 6, color, name: s.name }));
    return new Bokeh.LegendItem({ label: s.name, renderers: [line, markers[i]] });
  });
  // Four significant digits, as the table writes numbers.
  const xValue = dates ? "@x{%F %T}" : "@x{%.6g}";
  figure.add_tools(
    new Bokeh.HoverTool({
      tooltips: [["", "$name"], [xTitle || "x", xValue], [yTitle || "y", "@y{%.4g}"]],
      formatters: { "@x": dates ? "datetime" : "printf", "@y": "printf" },
      renderers: markers, // one per series, so a point gets one tooltip
      line_policy: "nearest",
    }),
  );
  if (series.length > 1) {
    // Below the plot, in as many columns as fit: 50 runs' names do not cover their curves.
    figure.add_layout(new Bokeh.Legend({ items, orientation: "horizontal", ncols: "auto", click_policy: "hide", border_line_alpha: 0 }), "below");
  }
  return { figure, sources, markers };
}

// A few points (an hour of 5-minute buckets, a run's epochs) are read one by one, and a lone
// point has no line to show it; thousands of markers would only hide the line. Markers are
// made transparent rather than hidden: the tooltips still find the points under them.
function markFewPoints(chart) {
  chart.markers.forEach((marker, i) => {
    const alpha = chart.sources[i].data.x.length < MARKED_UP_TO ? 1 : 0;
    marker.glyph.fill_alpha = alpha;
    marker.glyph.line_alpha = alpha;
  });
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

// Append points to the open chart without drawing it anew (live updates): [[series index, {x, y}]].
export async function extend(plot, points) {
  const chart = shownCharts.get(plot);
  const added = new Map();
  for (const [index, { x, y }] of points) {
    if (!added.has(index)) added.set(index, { x: [], y: [] });
    added.get(index).x.push(x);
    added.get(index).y.push(y);
  }
  for (const [index, columns] of added) chart.sources[index].stream(columns);
  markFewPoints(chart);
  plot.dataset.points = String(chart.sources.reduce((total, source) => total + source.data.x.length, 0));
}
