// Models: the list with pages, and a form to create one (write scope).
import { api, describe, query as toQuery } from "/ui/api.js";
import { add, h, number, pager, replace, statusBadge, table, when } from "/ui/dom.js";

export async function render(main, { query, navigate, notify, can, setTitle }) {
  setTitle("Models");
  const page = Math.max(1, Number(query.get("page")) || 1);
  const listing = h("div");
  add(main, h("h1", {}, "Models"), listing, can("write") ? createForm(navigate, notify) : null);
  const answer = await api("/models", { params: { page, per_page: 25 } });
  const pages = Math.max(1, Math.ceil(answer.meta.total / answer.meta.per_page));
  replace(
    listing,
    table(
      [
        ["Name", (m) => h("a", { href: `/models/${encodeURIComponent(m.id)}` }, m.name)],
        ["Provider", (m) => m.provider],
        ["Type", (m) => m.type],
        ["Status", (m) => statusBadge(m.status)],
        ["Created", (m) => when(m.created_at)],
      ],
      answer.data,
      `${number(answer.meta.total)} models`,
    ),
    pager(page, pages, (n) => navigate(`/models${toQuery({ page: n })}`)),
  );
  return null;
}

export function modelFields(model = {}) {
  return [
    h("label", {}, "Name", h("input", { name: "name", required: true, value: model.name || "" })),
    h("label", {}, "Provider", h("input", { name: "provider", required: true, value: model.provider || "" })),
    h("label", {}, "Type", h("input", { name: "type", required: true, value: model.type || "llm" })),
  ];
}

export function readModel(form, notify) {
  const data = new FormData(form);
  try {
    return {
      name: data.get("name"),
      provider: data.get("provider"),
      type: data.get("type"),
      config: JSON.parse(data.get("config") || "{}"),
    };
  } catch (error) {
    notify(`Config is not JSON: ${error.message}`);
    return null;
  }
}

function createForm(navigate, notify) {
  const form = h(
    "form",
    { class: "panel", id: "create-model", "aria-labelledby": "new-model" },
    h("h2", { id: "new-model" }, "New model"),
    h("div", { class: "row" }, modelFields()),
    h("label", {}, "Config (JSON)", h("textarea", { name: "config", rows: 4, cols: 60 }, "{}")),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Create")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = readModel(form, notify);
    if (model === null) return;
    try {
      const created = await api("/models", { method: "POST", body: { model } });
      navigate(`/models/${encodeURIComponent(created.data.id)}`);
    } catch (error) {
      notify(`Not created: ${describe(error)}`);
    }
  });
  return form;
}
