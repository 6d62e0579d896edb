// Home: the host's figures and the experiments' summary, live from dashboard:<key id>; the
// most recent experiments and the runs training now.
import { api } from "/ui/api.js";
import { add, h, number, percent, replace, statusBadge, table, when } from "/ui/dom.js";

export async function render(main, { session, socket, setTitle }) {
  setTitle("Home");
  const figures = {
    active: card("Experiments running"),
    completed_today: card("Completed today (UTC)"),
    cpu: card("Host CPU"),
    memory: card("Host memory"),
    gpu: card("GPU"),
    process: card("API process CPU"),
  };
  const recent = h("div", { id: "recent-experiments" }, h("p", { class: "muted" }, "Loading…"));
  const running = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  add(main, 
    h("h1", {}, "Home"),
    h("section", { "aria-label": "Live figures", class: "cards" }, Object.values(figures).map((f) => f.node)),
    h("h2", {}, "Recent experiments"),
    recent,
    h("h2", {}, "Runs training now"),
    running,
  );

  const channel = socket.channel(`dashboard:${session.key_id}`);
  channel.on("experiment_summary", (summary) => {
    figures.active.set(number(summary.active));
    figures.completed_today.set(number(summary.completed_today));
  });
  channel.on("system_stats", (stats) => {
    figures.cpu.set(`${Math.round(stats.cpu)} %`);
    figures.memory.set(`${Math.round(stats.memory)} %`);
    figures.gpu.set(stats.gpu === null ? "none" : `${Math.round(stats.gpu)} %`);
    figures.process.set(`${Math.round(stats.process.cpu)} %`);
  });
  channel.join();

  // Each list is drawn when its answer comes: a slow one never holds the other back.
  const drawRecent = api("/experiments", { params: { per_page: 10, sort: "-created_at" } }).then((experiments) =>
    replace(
      recent,
      table(
        [
          ["Name", (e) => h("a", { href: `/experiments/${encodeURIComponent(e.id)}` }, e.name)],
          ["Status", (e) => statusBadge(e.status)],
          ["Created", (e) => when(e.created_at)],
        ],
        experiments.data,
      ),
      h("p", {}, h("a", { href: "/experiments" }, `All ${number(experiments.meta.total)} experiments`)),
    ),
  );
  const drawRunning = api("/runs", { params: { per_page: 20, "filter[status]": "running" } }).then((runs) =>
    replace(
      running,
      table(
        [
          ["Run", (r) => h("a", { href: `/runs/${encodeURIComponent(r.id)}` }, r.id)],
          ["Experiment", (r) => h("a", { href: `/experiments/${encodeURIComponent(r.experiment_id)}` }, r.experiment_id)],
          ["Progress", (r) => h("progress", { max: 1, value: r.progress, "aria-label": `progress ${percent(r.progress)}` })],
          ["Started", (r) => when(r.started_at)],
        ],
        runs.data,
      ),
    ),
  );
  await Promise.all([drawRecent, drawRunning]);
  return () => channel.leave();
}

function card(label) {
  const value = h("div", { class: "value" }, "—");
  return { node: h("div", { class: "card" }, h("div", { class: "label" }, label), value), set: (text) => (value.textContent = text) };
}
