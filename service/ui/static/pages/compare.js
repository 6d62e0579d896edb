// Compare 2–10 experiments: the comparison report rendered, its downloads (LaTeX, Markdown,
// CSV, HTML), and any statistical test on one of them, read with its interpretation and
// assumption checks.
import { api, describe } from "/ui/api.js";
import { add, h, number, replace, table } from "/ui/dom.js";
import { downloadFrom } from "/ui/download.js";
import { selection } from "/ui/pages/experiments.js";

const FORMATS = [
  ["latex", "LaTeX", "tex"],
  ["markdown", "Markdown", "md"],
  ["csv", "CSV", "csv"],
  ["html", "HTML", "html"],
];
const TESTS = [
  "welch_t_test",
  "two_sample_t_test",
  "paired_t_test",
  "one_sample_t_test",
  "mann_whitney_u",
  "wilcoxon_signed_rank",
  "one_way_anova",
  "kruskal_wallis",
  "chi_square",
  "fisher_exact",
  "bootstrap",
];

export async function render(main, { query, notify, setTitle }) {
  setTitle("Compare");
  const ids = (query.get("ids") || selection().join(",")).split(",").map((id) => id.trim()).filter(Boolean);
  add(main, h("h1", {}, "Compare experiments"));
  if (ids.length < 2 || ids.length > 10) {
    add(
      main,
      h("p", {}, "Choose 2 to 10 experiments on the ", h("a", { href: "/experiments" }, "experiments page"), " and press “Compare selected”."),
    );
    return null;
  }
  const experiments = await Promise.all(ids.map((id) => api(`/experiments/${encodeURIComponent(id)}`).then((a) => a.data)));
  const request = { experiment_ids: ids, template: "publication" };
  const report = h("iframe", { title: "Comparison report", class: "report", sandbox: "" });
  const downloads = FORMATS.map(([format, label, suffix]) =>
    h(
      "button",
      {
        type: "button",
        onclick: () =>
          downloadFrom("/export/comparison", { ...request, format }, `comparison.${suffix}`).catch((error) =>
            notify(`Download failed: ${describe(error)}`),
          ),
      },
      `Download ${label}`,
    ),
  );
  add(
    main,
    h("p", {}, experiments.map((e, i) => [i ? ", " : "", h("a", { href: `/experiments/${encodeURIComponent(e.id)}` }, e.name)])),
    h("div", { class: "row" }, downloads),
    h("div", { class: "panel" }, report),
    h("h2", {}, "Run a statistical test"),
    testForm(experiments, notify),
  );
  try {
    const rendered = (await api("/export/comparison", { method: "POST", body: { ...request, format: "html" } })).data;
    // The report is its own document, shown sandboxed: its styles stay in it, and nothing in it runs.
    report.srcdoc = rendered.content;
  } catch (error) {
    replace(report.parentElement, h("p", {}, `No report: ${describe(error)}`));
  }
  return null;
}

function testForm(experiments, notify) {
  const result = h("div", { class: "panel", "aria-live": "polite" }, h("p", { class: "muted" }, "The result shows here."));
  const form = h(
    "form",
    { class: "panel", "aria-label": "Statistical test" },
    h(
      "div",
      { class: "row" },
      h("label", {}, "Experiment", h("select", { name: "experiment_id" }, experiments.map((e) => h("option", { value: e.id }, e.name)))),
      h("label", {}, "Test", h("select", { name: "test_type" }, TESTS.map((t) => h("option", { value: t }, t)))),
      h("label", {}, "Metric", h("input", { name: "metric", placeholder: "accuracy" })),
      h("label", {}, "Group by", h("input", { name: "group_by", value: "model" })),
      h("label", {}, "Groups (comma-separated, empty: all)", h("input", { name: "groups" })),
      h("label", {}, "Alpha", h("input", { name: "alpha", type: "number", step: "any", min: "0.0001", max: "0.5", value: "0.05" })),
      h(
        "label",
        {},
        "Alternative",
        h("select", { name: "alternative" }, ["two_sided", "less", "greater"].map((a) => h("option", { value: a }, a))),
      ),
    ),
    h("button", { type: "submit", class: "primary" }, "Run test"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const groups = data.get("groups").split(",").map((g) => g.trim()).filter(Boolean);
    const test = {
      experiment_id: data.get("experiment_id"),
      test_type: data.get("test_type"),
      options: { alpha: Number(data.get("alpha")), alternative: data.get("alternative"), group_by: data.get("group_by") || "model" },
    };
    if (data.get("metric")) test.metric = data.get("metric").trim();
    if (groups.length) test.groups = groups;
    try {
      const answer = await api("/statistical-results", { method: "POST", body: { test } });
      replace(result, outcome(answer.data));
    } catch (error) {
      notify(`Test refused: ${describe(error)}`);
      replace(result, h("p", {}, describe(error)));
    }
  });
  return h("div", {}, form, result);
}

function outcome(r) {
  const interpretation = r.interpretation || {};
  const checks = r.assumptions;
  return h(
    "div",
    { class: "outcome" },
    h("h3", {}, r.method || r.test_type),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Groups"),
      h("dd", {}, `${(r.groups || []).join(" vs ")} (n = ${(r.sample_sizes || []).join(", ")})`),
      h("dt", {}, r.statistic_name || "statistic"),
      h("dd", {}, number(r.statistic)),
      h("dt", {}, "p-value"),
      h("dd", {}, `${number(r.p_value)}${r.p_value_method ? ` (${r.p_value_method})` : ""}`),
      h("dt", {}, "Effect size"),
      h("dd", {}, r.effect_size === null ? "—" : `${number(r.effect_size)} (${r.effect_size_type})`),
      h("dt", {}, "Confidence interval"),
      h("dd", {}, r.confidence_interval ? `${number(r.confidence_interval[0])} to ${number(r.confidence_interval[1])} (${Math.round(r.confidence_level * 100)} %, ${r.confidence_interval_of})` : "—"),
      h("dt", {}, "Interpretation"),
      h(
        "dd",
        {},
        `${interpretation.significance === "significant" ? "Significant" : "Not significant"} at α = ${r.alpha}`,
        interpretation.effect_magnitude ? `; ${interpretation.effect_magnitude} effect` : "",
        interpretation.practical_significance ? `. ${interpretation.practical_significance}` : "",
      ),
    ),
    checks
      ? h(
          "div",
          {},
          h("h4", {}, `Assumptions: ${checks.satisfied === null ? "none checked" : checks.satisfied ? "satisfied" : "not satisfied"}`),
          checks.recommended_test ? h("p", {}, `Recommended instead: ${checks.recommended_test}`) : null,
          checks.normality.length
            ? table(
                [
                  ["Group", (c) => c.group],
                  ["n", (c) => number(c.n), "num"],
                  ["Shapiro-Wilk p", (c) => number(c.p_value), "num"],
                  ["Normal", (c) => (c.passed === null ? "not checked" : c.passed ? "yes" : "no")],
                ],
                checks.normality,
                "Normality",
              )
            : null,
          checks.notes.map((note) => h("p", { class: "muted" }, note)),
        )
      : null,
  );
}
