// The API as this browser's session calls it: JSON in and out, errors in API.md's shape.

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "internal_error";
    this.details = error.details || null;
  }
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export async function api(path, { method = "GET", body, params } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const answer = await fetch(`/api/v1${path}${params ? query(params) : ""}`, init);
  if (answer.status === 204) return null;
  const text = await answer.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!answer.ok) {
    const error = payload && payload.error ? payload.error : { message: `HTTP ${answer.status}` };
    throw new ApiError(answer.status, error);
  }
  return payload;
}

// A run's metric as a chart draws it (GET /runs/:id/metrics/:name, down-sampled by the
// server to maxPoints): x is the step, or the point's place where it has no step.
export async function metricHistory(runId, name, maxPoints) {
  const path = `/runs/${encodeURIComponent(runId)}/metrics/${encodeURIComponent(name)}`;
  const points = (await api(path, { params: { max_points: maxPoints } })).data.points;
  return { x: points.map((p, i) => (p.step === null ? i : p.step)), y: points.map((p) => p.value) };
}

// One sentence for the user, with the field-by-field details the API gave.
export function describe(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const details = error.details
    ? Object.entries(error.details)
        .map(([field, problems]) => `${field}: ${[].concat(problems).join(", ")}`)
        .join("; ")
    : "";
  return `${error.message}${details ? ` (${details})` : ""} [${error.status} ${error.code}]`;
}

// Events carry their name as its dot-separated parts (API.md); pages compare the dotted text.
export function eventNameOf(event) {
  return Array.isArray(event.event_name) ? event.event_name.join(".") : String(event.event_name);
}
