// Experiments: API.md's filters, sort and pages (all in the URL, so a view is bookmarkable),
// create, the six actions with the API's reason when one is refused, and a selection of 2–10
// to compare.
import { api, describe, query as toQuery } from "/ui/api.js";
import { add, h, number, pager, replace, statusBadge, table, when } from "/ui/dom.js";

const STATUSES = ["pending", "running", "paused", "completed", "failed", "cancelled"];
const SORTS = [
  ["-created_at", "Newest first"],
  ["created_at", "Oldest first"],
  ["-updated_at", "Recently updated"],
  ["name", "Name A–Z"],
  ["-name", "Name Z–A"],
  ["status", "Status"],
];
const FILTERS = ["status", "name", "tag", "created_after", "created_before"];
// Which actions an experiment in each status offers; the server decides, and says why not.
export const ACTIONS = {
  pending: ["start", "cancel"],
  running: ["pause", "cancel"],
  paused: ["resume", "cancel"],
  completed: [],
  failed: [],
  cancelled: [],
};
const SELECTION_KEY = "crucible.compare";
const MAX_COMPARED = 10;

export function selection() {
  try {
    return JSON.parse(sessionStorage.getItem(SELECTION_KEY) || "[]");
  } catch {
    return [];
  }
}

function keepSelection(ids) {
  sessionStorage.setItem(SELECTION_KEY, JSON.stringify(ids));
}

export async function render(main, { query, navigate, notify, can, setTitle }) {
  setTitle("Experiments");
  const view = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) || ""]));
  const sort = query.get("sort") || "-created_at";
  const page = Math.max(1, Number(query.get("page")) || 1);
  const perPage = Number(query.get("per_page")) || 25;

  const go = (changes) => {
    const next = { ...view, sort, page, per_page: perPage === 25 ? "" : perPage, ...changes };
    if (next.sort === "-created_at") next.sort = "";
    if (Number(next.page) === 1) next.page = "";
    navigate(`/experiments${toQuery(next)}`);
  };

  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter experiments" },
    h("label", {}, "Status", h("select", { name: "status" }, h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s, selected: view.status === s }, s)))),
    h("label", {}, "Name contains", h("input", { name: "name", value: view.name, type: "search" })),
    h("label", {}, "Tag", h("input", { name: "tag", value: view.tag })),
    h("label", {}, "Created after", h("input", { name: "created_after", type: "datetime-local", value: localInput(view.created_after) })),
    h("label", {}, "Created before", h("input", { name: "created_before", type: "datetime-local", value: localInput(view.created_before) })),
    h("label", {}, "Sort", h("select", { name: "sort" }, SORTS.map(([value, text]) => h("option", { value, selected: sort === value }, text)))),
    h("button", { type: "submit" }, "Apply"),
  );
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(filters);
    go({
      status: data.get("status"),
      name: data.get("name").trim(),
      tag: data.get("tag").trim(),
      created_after: isoOf(data.get("created_after")),
      created_before: isoOf(data.get("created_before")),
      sort: data.get("sort"),
      page: 1,
    });
  });

  const compareButton = h("button", { type: "button", class: "primary" });
  const showSelection = () => {
    const count = selection().length;
    compareButton.textContent = `Compare selected (${count})`;
    compareButton.disabled = count < 2 || count > MAX_COMPARED;
  };
  compareButton.addEventListener("click", () => navigate(`/compare?ids=${selection().map(encodeURIComponent).join(",")}`));
  showSelection();

  const listing = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  add(main, 
    h("h1", {}, "Experiments"),
    filters,
    h("div", { class: "row" }, compareButton, h("span", { class: "muted" }, "Select 2–10 experiments to compare them.")),
    listing,
    can("write") ? createForm(navigate, notify) : null,
  );

  const params = { page, per_page: perPage, sort };
  for (const name of FILTERS) if (view[name]) params[`filter[${name}]`] = view[name];
  let answer;
  try {
    answer = await api("/experiments", { params });
  } catch (error) {
    replace(listing, h("p", {}, describe(error)));
    return;
  }
  const act = async (experiment, action) => {
    try {
      if (action === "delete") {
        if (!confirm(`Delete “${experiment.name}”? Its history stays in the log.`)) return;
        await api(`/experiments/${encodeURIComponent(experiment.id)}`, { method: "DELETE" });
      } else if (action === "clone") {
        const created = await api(`/experiments/${encodeURIComponent(experiment.id)}/clone`, {
          method: "POST",
          body: { name: `${experiment.name} (copy)` },
        });
        navigate(`/experiments/${encodeURIComponent(created.data.id)}`);
        return;
      } else {
        await api(`/experiments/${encodeURIComponent(experiment.id)}/${action}`, { method: "POST" });
      }
      notify(`${action}: done for “${experiment.name}”.`, "info");
      go({});
    } catch (error) {
      notify(`${action} refused for “${experiment.name}”: ${describe(error)}`);
    }
  };
  const columns = [
    [
      "Select",
      (e) => {
        const box = h("input", { type: "checkbox", "aria-label": `select ${e.name} to compare`, checked: selection().includes(e.id) });
        box.addEventListener("change", () => {
          const ids = selection().filter((id) => id !== e.id);
          if (box.checked) ids.push(e.id);
          keepSelection(ids);
          showSelection();
        });
        return box;
      },
    ],
    ["Name", (e) => h("a", { href: `/experiments/${encodeURIComponent(e.id)}` }, e.name)],
    ["Status", (e) => statusBadge(e.status)],
    ["Tags", (e) => e.tags.join(", ")],
    ["Created", (e) => when(e.created_at)],
    ["Updated", (e) => when(e.updated_at)],
  ];
  if (can("write")) {
    columns.push([
      "Actions",
      (e) =>
        h(
          "div",
          { class: "actions" },
          [...ACTIONS[e.status], "clone", "delete"].map((action) =>
            h("button", { type: "button", onclick: () => act(e, action), "aria-label": `${action} ${e.name}` }, action),
          ),
        ),
    ]);
  }
  const meta = answer.meta;
  const pages = Math.max(1, Math.ceil(meta.total / meta.per_page));
  replace(
    listing,
    table(columns, answer.data, `${number(meta.total)} experiments`),
    pager(page, pages, (n) => go({ page: n })),
  );
}

function createForm(navigate, notify) {
  const form = h(
    "form",
    { class: "panel", id: "create-experiment", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "New experiment"),
    h(
      "div",
      { class: "row" },
      h("label", {}, "Name", h("input", { name: "name", required: true, maxlength: 255 })),
      h("label", {}, "Description", h("input", { name: "description", size: 40 })),
      h("label", {}, "Tags (comma-separated)", h("input", { name: "tags" })),
    ),
    h("label", {}, "Config (JSON)", h("textarea", { name: "config", rows: 4, cols: 60 }, "{}")),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Create")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    let config;
    try {
      config = JSON.parse(data.get("config") || "{}");
    } catch (error) {
      notify(`Config is not JSON: ${error.message}`);
      return;
    }
    const tags = data.get("tags").split(",").map((t) => t.trim()).filter(Boolean);
    try {
      const created = await api("/experiments", {
        method: "POST",
        body: { experiment: { name: data.get("name"), description: data.get("description"), config, tags } },
      });
      navigate(`/experiments/${encodeURIComponent(created.data.id)}`);
    } catch (error) {
      notify(`Not created: ${describe(error)}`);
    }
  });
  return form;
}

// datetime-local inputs speak local time without a zone; the API speaks ISO 8601 with one.
function isoOf(local) {
  return local ? new Date(local).toISOString() : "";
}

function localInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
}
