// Saving what an API call answered as a file, under the name the server gave it.
import { ApiError } from "/ui/api.js";
import { h } from "/ui/dom.js";

export async function downloadFrom(path, body, fallbackName) {
  const answer = await fetch(`/api/v1${path}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "*/*" },
    body: JSON.stringify(body),
  });
  if (!answer.ok) {
    const payload = await answer.json().catch(() => ({}));
    throw new ApiError(answer.status, payload.error || { message: `HTTP ${answer.status}` });
  }
  saveBlob(await answer.blob(), fileName(answer, fallbackName));
}

function fileName(answer, fallback) {
  const disposition = answer.headers.get("Content-Disposition") || "";
  const found = /filename="?([^";]+)"?/.exec(disposition);
  return found ? found[1] : fallback;
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
