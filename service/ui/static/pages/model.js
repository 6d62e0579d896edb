// One model: its fields (edit and delete with the write scope) and its usage for 1h, 24h, 7d
// and 30d: requests, success rate, latency mean and p99, tokens, errors by kind.
import { api, describe } from "/ui/api.js";
import { add, h, number, percent, table } from "/ui/dom.js";
import { modelFields, readModel } from "/ui/pages/models.js";

const PERIODS = ["1h", "24h", "7d", "30d"];

export async function render(main, { params, navigate, notify, can, setTitle }) {
  const path = `/models/${encodeURIComponent(params.id)}`;
  const model = (await api(path)).data;
  setTitle(model.name);
  const periods = await Promise.all(PERIODS.map((period) => api(`${path}/statistics`, { params: { period } }).then((a) => a.data)));
  const errorKinds = [...new Set(periods.flatMap((s) => Object.keys(s.error_breakdown)))].sort();
  add(
    main,
    h("p", {}, h("a", { href: "/models" }, "← Models")),
    h("h1", {}, model.name),
    h("p", { class: "muted" }, `${model.provider} · ${model.type} · ${model.status}`),
    h("h2", {}, "Usage"),
    table(
      [
        ["Period", (s) => s.period],
        ["Requests", (s) => number(s.total_requests), "num"],
        ["Success rate", (s) => percent(s.success_rate), "num"],
        ["Mean latency (ms)", (s) => number(s.avg_latency_ms), "num"],
        ["p99 latency (ms)", (s) => number(s.p99_latency_ms), "num"],
        ["Tokens", (s) => number(s.total_tokens), "num"],
        ...errorKinds.map((kind) => [`errors: ${kind}`, (s) => number(s.error_breakdown[kind] || 0), "num"]),
      ],
      periods,
    ),
    h("h2", {}, "Config"),
    h("pre", { class: "json" }, JSON.stringify(model.config, null, 2)),
    can("write") ? editForm(model, path, navigate, notify) : null,
  );
  return null;
}

function editForm(model, path, navigate, notify) {
  const form = h(
    "form",
    { class: "panel", "aria-labelledby": "edit-model" },
    h("h2", { id: "edit-model" }, "Edit"),
    h("div", { class: "row" }, modelFields(model)),
    h("label", {}, "Config (JSON)", h("textarea", { name: "config", rows: 4, cols: 60 }, JSON.stringify(model.config, null, 2))),
    h(
      "p",
      { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Save"),
      h(
        "button",
        {
          type: "button",
          onclick: async () => {
            if (!confirm(`Delete the model “${model.name}”?`)) return;
            try {
              await api(path, { method: "DELETE" });
              navigate("/models");
            } catch (error) {
              notify(`Not deleted: ${describe(error)}`);
            }
          },
        },
        "Delete",
      ),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const changes = readModel(form, notify);
    if (changes === null) return;
    try {
      await api(path, { method: "PATCH", body: { model: changes } });
      notify("Saved.", "info");
      navigate(path, { replaceState: true });
    } catch (error) {
      notify(`Not saved: ${describe(error)}`);
    }
  });
  return form;
}
