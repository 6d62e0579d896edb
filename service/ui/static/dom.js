// Building elements from data without HTML strings: every value becomes text, never markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

// Like Element.append, but null, undefined and false add nothing (not the text "null").
export function add(element, ...children) {
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function statusBadge(status) {
  return h("span", { class: `status ${status}` }, status);
}

// One formatter each, made on first use: toLocaleString finds its formatter again on every
// call (0.1 ms in Chromium, against 0.002 ms for a formatter's format), so a table of a
// thousand dates took 0.2 s. The first use loads the locale's data either way (20-50 ms).
let dateFormat = null;
let integerFormat = null;

export function when(iso) {
  if (!iso) return "—";
  dateFormat ??= new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  return dateFormat.format(new Date(iso));
}

export function number(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  integerFormat ??= new Intl.NumberFormat();
  if (Number.isInteger(value)) return integerFormat.format(value);
  if (Math.abs(value) < 1e-3) return value.toExponential(digits - 1); // 6.582e-8, not 0.00000006582
  return value.toPrecision(digits);
}

export function percent(fraction) {
  return fraction === null || fraction === undefined ? "—" : `${Math.round(fraction * 100)} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// A table whose rows are data: columns are [heading, value(row) → node or text, class].
export function table(columns, rows, caption) {
  return h(
    "table",
    {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", { scope: "col" }, heading)))),
    h(
      "tbody",
      {},
      rows.length === 0
        ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "Nothing here yet."))
        : rows.map((row) => h("tr", {}, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row))))),
    ),
  );
}

// Previous / "Page N of M" / Next; `go(n)` shows page n.
export function pager(page, pages, go) {
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "Previous"),
    h("span", {}, `Page ${page} of ${pages}`),
    h("button", { type: "button", disabled: page >= pages, onclick: () => go(page + 1) }, "Next"),
  );
}
