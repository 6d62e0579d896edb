// Crucible UI's shell: the session, the live connection, and a router that draws the page of
// the current URL (every page is bookmarkable; back and forward redraw the page they reach).

import { api, describe } from "/ui/api.js";
import { replace, h } from "/ui/dom.js";
import { Socket } from "/ui/phoenix.js";

const ROUTES = [
  ["/", "home"],
  ["/sign-in", "sign-in"],
  ["/experiments", "experiments"],
  ["/experiments/:id", "experiment"],
  ["/runs/:id", "run"],
  ["/compare", "compare"],
  ["/explore", "explore"],
  ["/models", "models"],
  ["/models/:id", "model"],
];

const main = document.getElementById("page");
const notice = document.getElementById("notice");
let session = null;
let socket = null;
let leaving = []; // teardowns of the page on screen (channels to leave)
let drawing = 0;

function match(pathname) {
  for (const [pattern, name] of ROUTES) {
    const names = [];
    const regex = new RegExp(
      "^" + pattern.replace(/:(\w+)/g, (_, param) => (names.push(param), "([^/]+)")) + "/?$",
    );
    const found = regex.exec(pathname);
    if (found) return { name, params: Object.fromEntries(names.map((param, i) => [param, decodeURIComponent(found[i + 1])])) };
  }
  return null;
}

export function notify(message, kind = "error") {
  if (!message) {
    notice.hidden = true;
    return;
  }
  notice.className = `notice ${kind === "error" ? "" : kind}`;
  notice.textContent = message;
  notice.hidden = false;
}

export function navigate(url, { replaceState = false } = {}) {
  if (replaceState) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  draw();
}

async function loadSession() {
  session = (await api("/sessions")).data; // null: not signed in
  const who = document.getElementById("who");
  who.hidden = session === null;
  if (session) {
    document.getElementById("who-key").textContent = `${session.key_id} · ${session.scopes.join(", ")}`;
    if (socket === null) {
      socket = new Socket();
      const state = document.getElementById("live-state");
      socket.onState((open) => {
        state.textContent = open ? "live" : "offline";
        state.classList.toggle("on", open);
      });
      socket.connect();
    }
  }
}

async function signOut() {
  try {
    await api("/sessions", { method: "DELETE" });
  } catch (error) {
    notify(describe(error));
  }
  session = null;
  if (socket) socket.disconnect();
  socket = null;
  document.getElementById("who").hidden = true;
  navigate("/sign-in?signed_out=1");
}

function markNavigation(pathname) {
  for (const link of document.querySelectorAll(".top nav a")) {
    const here = link.getAttribute("href") === "/" ? pathname === "/" : pathname.startsWith(link.getAttribute("href"));
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function draw() {
  const turn = ++drawing;
  for (const teardown of leaving.splice(0)) {
    try {
      teardown();
    } catch {
      /* a page's teardown never blocks the next page */
    }
  }
  // A page registers a teardown as soon as it holds something (a joined channel); one that
  // finishes drawing after the user has moved on is torn down at once.
  const onLeave = (teardown) => (turn === drawing ? leaving.push(teardown) : teardown());
  notify(null);
  const route = match(location.pathname) || { name: "not-found", params: {} };
  const pageLoading = import(`/ui/pages/${route.name}.js`); // fetched while the session is asked for
  pageLoading.catch(() => {}); // a failure is shown below, where it is awaited
  if (route.name !== "sign-in" && session === null) {
    await loadSession();
    if (session === null) {
      navigate(`/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`, { replaceState: true });
      return;
    }
  }
  markNavigation(location.pathname);
  const context = {
    params: route.params,
    query: new URLSearchParams(location.search),
    session,
    socket,
    navigate,
    notify,
    onLeave,
    can: (scope) => session !== null && (session.scopes.includes(scope) || session.scopes.includes("admin")),
    onSignedIn: async () => {
      await loadSession();
    },
    setTitle: (title) => (document.title = `${title} · Crucible UI`),
  };
  replace(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const page = await pageLoading;
    if (turn !== drawing) return; // another navigation came first
    replace(main);
    const teardown = await page.render(main, context);
    if (teardown) onLeave(teardown);
  } catch (error) {
    if (turn !== drawing) return;
    if (error.status === 401) {
      session = null;
      navigate(`/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`, { replaceState: true });
      return;
    }
    replace(main, h("h1", {}, "Something went wrong"), h("p", {}, describe(error)));
  }
  main.focus({ preventScroll: true });
}

// Links to pages of this UI change the page without a reload; downloads and the API load as usual.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  if (link.target || link.hasAttribute("download") || link.origin !== location.origin) return;
  if (link.pathname.startsWith("/api/") || link.pathname.startsWith("/ui/") || !match(link.pathname)) return;
  event.preventDefault();
  navigate(link.pathname + link.search);
});
window.addEventListener("popstate", draw);
document.getElementById("sign-out").addEventListener("click", signOut);
draw();
