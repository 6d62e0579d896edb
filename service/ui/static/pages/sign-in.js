// Sign in: an API key becomes a session cookie (POST /api/v1/sessions); the key is not kept.
import { api, describe } from "/ui/api.js";
import { add, h } from "/ui/dom.js";

export async function render(main, { query, navigate, notify, onSignedIn, setTitle }) {
  setTitle("Sign in");
  if (query.get("link") === "spent") {
    notify("That sign-in link was already used or has expired. Paste an API key, or restart `crucible serve` for a new link.");
  } else if (query.get("signed_out")) {
    notify("You are signed out.", "info");
  }
  const key = h("input", {
    id: "api-key",
    name: "api_key",
    type: "password",
    autocomplete: "current-password",
    required: true,
    placeholder: "crucible.…",
  });
  const form = h(
    "form",
    { class: "panel signin", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in to Crucible UI"),
    h("p", { class: "muted" }, "Paste an API key. `crucible serve` printed one, and a link that signs you in at once."),
    h("label", { for: "api-key" }, "API key", key),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("/sessions", { method: "POST", body: { api_key: key.value.trim() } });
    } catch (error) {
      notify(describe(error));
      key.select();
      return;
    }
    await onSignedIn();
    const next = query.get("next");
    navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", { replaceState: true });
  });
  add(main, form);
  key.focus();
}
