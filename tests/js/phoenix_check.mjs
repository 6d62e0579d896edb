// Drives a running `crucible serve` with the official `phoenix` JavaScript client, as a
// browser or Node program would: connect with a key, join each kind of channel, cause
// events through the REST API, and check every push. Exits non-zero on any mismatch.
//
//   CRUCIBLE_URL=http://127.0.0.1:4000 CRUCIBLE_KEY=<admin key secret> node phoenix_check.mjs

import assert from "node:assert/strict"
import {Socket} from "phoenix"
import WebSocket from "ws"

const BASE = process.env.CRUCIBLE_URL
const KEY = process.env.CRUCIBLE_KEY
assert.ok(BASE && KEY, "set CRUCIBLE_URL and CRUCIBLE_KEY")
const ENDPOINT = BASE.replace(/^http/, "ws") + "/socket"
// Node 22+ has a WebSocket of its own; older ones take the `ws` package's.
const transport = globalThis.WebSocket ?? WebSocket
const WAIT_MS = 20000 // only a guard against hanging: nothing here measures time
const sockets = []

function step(name) {
  console.log(`- ${name}`)
}

function withTimeout(promise, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function api(method, path, body, key = KEY) {
  const answer = await fetch(BASE + path, {
    method,
    headers: {Authorization: `Bearer ${key}`, "Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await answer.text()
  return {status: answer.status, body: text ? JSON.parse(text) : null, headers: answer.headers}
}

async function expectStatus(method, path, body, status) {
  const answer = await api(method, path, body)
  assert.equal(answer.status, status, `${method} ${path}: ${JSON.stringify(answer.body)}`)
  return answer.body
}

function connect(opts) {
  const socket = new Socket(ENDPOINT, {transport, heartbeatIntervalMs: 250, ...opts})
  sockets.push(socket)
  const opened = withTimeout(new Promise(resolve => socket.onOpen(resolve)), "socket open")
  socket.connect()
  return {socket, opened}
}

// Every push of the given events on a channel, kept until a test takes it.
class Inbox {
  constructor(channel, events) {
    this.items = []
    this.waiters = []
    for (const event of events) channel.on(event, payload => this.put(event, payload))
  }

  put(event, payload) {
    const index = this.waiters.findIndex(w => w.event === event && w.match(payload))
    if (index >= 0) this.waiters.splice(index, 1)[0].resolve(payload)
    else this.items.push({event, payload})
  }

  next(event, match = () => true) {
    const index = this.items.findIndex(i => i.event === event && match(i.payload))
    if (index >= 0) return Promise.resolve(this.items.splice(index, 1)[0].payload)
    return withTimeout(new Promise(resolve => this.waiters.push({event, match, resolve})), `${event} push`)
  }

  pending(event) {
    return this.items.filter(i => i.event === event)
  }
}

function join(channel) {
  return withTimeout(
    new Promise(resolve => {
      channel
        .join()
        .receive("ok", response => resolve({status: "ok", response}))
        .receive("error", response => resolve({status: "error", response}))
    }),
    `join reply on ${channel.topic}`,
  )
}

function request(channel, event, payload) {
  return withTimeout(
    new Promise(resolve => {
      channel
        .push(event, payload)
        .receive("ok", response => resolve({status: "ok", response}))
        .receive("error", response => resolve({status: "error", response}))
    }),
    `${event} reply on ${channel.topic}`,
  )
}

function inference(experimentId, name = ["crucible", "model", "inference"], extra = {}) {
  return {
    event_name: name,
    measurements: {duration_ms: 234, tokens: 150},
    metadata: {experiment_id: experimentId, model: "gpt-4"},
    ...extra,
  }
}

function runLog(experimentId) {
  return inference(experimentId, ["crucible", "run", "log"], {
    metadata: {experiment_id: experimentId, run_id: "run_node", level: "info", message: "epoch 1"},
  })
}

async function ingest(...events) {
  const body = await expectStatus("POST", "/api/v1/telemetry/events", {events}, 202)
  assert.equal(body.data.accepted, events.length)
}

const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

async function storedEvents(experimentId, count) {
  for (;;) {
    const body = await expectStatus("GET", `/api/v1/telemetry/events?filter[experiment_id]=${experimentId}`, undefined, 200)
    if (body.data.length === count) return body.data.sort(byId)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function main() {
  step("a bad token is refused before the upgrade")
  {
    const socket = new Socket(ENDPOINT, {transport, params: {token: "crucible.key_nope.bad"}, reconnectAfterMs: () => 60000})
    sockets.push(socket)
    const failed = withTimeout(new Promise(resolve => socket.onError(resolve)), "connection error")
    let opened = false
    socket.onOpen(() => (opened = true))
    socket.connect()
    const error = await failed
    assert.equal(opened, false)
    assert.match(String(error.message ?? error), /401/)
    socket.disconnect()
  }

  step("a key connects; heartbeats are answered")
  const heartbeats = []
  const {socket, opened} = connect({params: {token: KEY}})
  socket.onMessage(message => {
    if (message.topic === "phoenix" && message.event === "phx_reply") heartbeats.push(message.payload)
  })
  await opened
  const rtt = await withTimeout(new Promise(resolve => socket.ping(resolve)), "ping reply")
  assert.ok(rtt >= 0)

  step("experiment channel: join answers the status, actions push status_changed")
  const experiment = (await expectStatus("POST", "/api/v1/experiments", {experiment: {name: "live check"}}, 201)).data
  const experimentChannel = socket.channel(`experiment:${experiment.id}`)
  const experimentInbox = new Inbox(experimentChannel, ["status_changed", "progress_updated", "run_completed", "error"])
  assert.deepEqual(await join(experimentChannel), {status: "ok", response: {status: "pending"}})
  const started = (await expectStatus("POST", `/api/v1/experiments/${experiment.id}/start`, undefined, 200)).data
  assert.deepEqual(await experimentInbox.next("status_changed"), {status: "running", started_at: started.started_at})
  await expectStatus("POST", `/api/v1/experiments/${experiment.id}/pause`, undefined, 200)
  assert.equal((await experimentInbox.next("status_changed")).status, "paused")

  step("joins of a missing experiment or an unknown topic are error replies")
  for (const [topic, code] of [["experiment:exp_missing", "not_found"], ["chat:lobby", "unmatched_topic"]]) {
    const channel = socket.channel(topic)
    const reply = await join(channel)
    assert.equal(reply.status, "error")
    assert.equal(reply.response.code, code)
    channel.leave() // stops the client's rejoin attempts
  }
  assert.equal((await join(socket.channel("chat:lobby"))).response.reason, "unmatched topic")

  step("telemetry channels push events exactly as GET /api/v1/telemetry/events returns them")
  const experimentEvents = socket.channel(`telemetry:${experiment.id}`)
  const allEvents = socket.channel("telemetry:all")
  const experimentEventsInbox = new Inbox(experimentEvents, ["event"])
  const allEventsInbox = new Inbox(allEvents, ["event"])
  assert.deepEqual(await join(experimentEvents), {status: "ok", response: {event_types: null}})
  assert.equal((await join(allEvents)).status, "ok")
  await ingest(
    inference(experiment.id, undefined, {timestamp: "2024-01-15T10:35:00Z", data: {prompt: "hello"}}),
    runLog(experiment.id),
  )
  const pushed = [await experimentEventsInbox.next("event"), await experimentEventsInbox.next("event")]
  const everywhere = [await allEventsInbox.next("event"), await allEventsInbox.next("event")]
  assert.deepEqual(everywhere, pushed)
  assert.deepEqual(await storedEvents(experiment.id, 2), [...pushed].sort(byId))

  step("subscribe and unsubscribe filter the event types")
  let reply = await request(experimentEvents, "subscribe", {event_types: ["model.inference"]})
  assert.deepEqual(reply, {status: "ok", response: {event_types: ["model.inference"]}})
  await ingest(runLog(experiment.id), inference(experiment.id))
  assert.deepEqual((await experimentEventsInbox.next("event")).event_name, ["crucible", "model", "inference"])
  assert.deepEqual(experimentEventsInbox.pending("event"), []) // the log event came first and was filtered out
  reply = await request(experimentEvents, "unsubscribe", {event_types: ["model.inference"]})
  assert.deepEqual(reply, {status: "ok", response: {event_types: null}})
  await ingest(runLog(experiment.id))
  assert.deepEqual((await experimentEventsInbox.next("event")).event_name, ["crucible", "run", "log"])
  reply = await request(experimentEvents, "subscribe", {event_types: "model.inference"})
  assert.equal(reply.status, "error")
  assert.equal(reply.response.code, "validation_error")

  step("progress telemetry pushes progress_updated with an ETA from the observed rate")
  const progress = (value, at) =>
    inference(experiment.id, ["crucible", "run", "progress"], {
      measurements: {progress: value},
      metadata: {experiment_id: experiment.id, run_id: "run_node"},
      timestamp: at,
    })
  await ingest(progress(0.25, "2024-01-15T10:00:00Z"), progress(0.5, "2024-01-15T10:00:10Z"))
  await experimentInbox.next("progress_updated", p => p.progress === 0.25)
  assert.deepEqual(await experimentInbox.next("progress_updated"), {progress: 0.5, eta_seconds: 20, run_id: "run_node"})

  step("a run's completion pushes run_completed with its metrics")
  await ingest(
    inference(experiment.id, ["crucible", "run", "completed"], {
      measurements: {val_accuracy: 0.91},
      metadata: {experiment_id: experiment.id, run_id: "run_node"},
    }),
  )
  assert.deepEqual(await experimentInbox.next("run_completed"), {run_id: "run_node", metrics: {val_accuracy: 0.91}})

  step("dashboard channel: own dashboard pushes figures; another key's is refused")
  const adminKeyId = KEY.split(".")[1]
  const dashboard = socket.channel(`dashboard:${adminKeyId}`)
  const dashboardInbox = new Inbox(dashboard, ["system_stats", "experiment_summary"])
  assert.deepEqual(await join(dashboard), {status: "ok", response: {}})
  const stats = await dashboardInbox.next("system_stats")
  assert.deepEqual(Object.keys(stats).sort(), ["cpu", "gpu", "memory", "process"])
  assert.ok(stats.memory > 0 && stats.memory <= 100)
  assert.deepEqual(await dashboardInbox.next("experiment_summary"), {active: 0, completed_today: 0})
  await expectStatus("POST", `/api/v1/experiments/${experiment.id}/resume`, undefined, 200)
  assert.deepEqual(await dashboardInbox.next("experiment_summary", s => s.active === 1), {active: 1, completed_today: 0})

  const reader = (await expectStatus("POST", "/api/v1/api-keys", {api_key: {name: "live reader", scopes: ["read"]}}, 201)).data
  const readerSocket = connect({params: {token: reader.secret}})
  await readerSocket.opened
  const othersDashboard = readerSocket.socket.channel(`dashboard:${adminKeyId}`)
  const refused = await join(othersDashboard)
  assert.equal(refused.status, "error")
  assert.equal(refused.response.code, "forbidden")
  othersDashboard.leave()
  assert.equal((await join(readerSocket.socket.channel(`dashboard:${reader.id}`))).status, "ok")

  step("a session token and the authToken option connect too")
  const login = await fetch(BASE + "/api/v1/sessions", {
    method: "POST",
    headers: {"Content-Type": "application/json"}, // fetch would send a string as text/plain: 415
    body: JSON.stringify({api_key: KEY}),
  })
  const sessionToken = login.headers.get("set-cookie").match(/_crucible_ui_key=([^;]+)/)[1]
  const sessionSocket = connect({params: {token: sessionToken}})
  await sessionSocket.opened
  assert.equal((await join(sessionSocket.socket.channel("telemetry:all"))).status, "ok")
  const tokenSocket = connect({authToken: KEY})
  await tokenSocket.opened
  assert.equal((await join(tokenSocket.socket.channel("telemetry:all"))).status, "ok")

  step("leaving a channel is acknowledged and closes it")
  const closed = withTimeout(new Promise(resolve => allEvents.onClose(resolve)), "channel close")
  const left = await withTimeout(
    new Promise(resolve => allEvents.leave().receive("ok", resolve)),
    "leave reply",
  )
  assert.deepEqual(left, {})
  await closed

  step("heartbeats kept being answered")
  while (heartbeats.length < 3) await new Promise(resolve => setTimeout(resolve, 100))
  for (const heartbeat of heartbeats) assert.deepEqual(heartbeat, {status: "ok", response: {}})
  assert.equal(socket.isConnected(), true)
}

const guard = setTimeout(() => {
  console.error("FAILED: the checks did not finish in 120 s")
  process.exit(2)
}, 120000)

try {
  await main()
  console.log("ok: the phoenix client works with the WebSocket API")
  for (const socket of sockets) socket.disconnect()
  clearTimeout(guard)
  process.exit(0)
} catch (error) {
  console.error("FAILED:", error)
  process.exit(1)
}
