// A small client of the Phoenix channel protocol (serializer 2.0.0: [join_ref, ref, topic,
// event, payload] arrays) as this server speaks it. The official `phoenix` package is an npm
// package and this UI installs nothing from npm; what a dashboard needs is joining,
// pushing, heartbeats and rejoining after a reconnect. The browser's session cookie
// authenticates the socket (same origin), so no token is ever put in a URL.

const HEARTBEAT_MS = 30000;
const RECONNECT_MS = [1000, 2000, 5000, 10000];
const PUSH_TIMEOUT_MS = 10000;

export class Socket {
  constructor(path = "/socket/websocket") {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.url = `${scheme}://${location.host}${path}?vsn=2.0.0`;
    this.ref = 0;
    this.channels = new Set();
    this.pending = new Map(); // ref → {resolve, reject, timer}
    this.stateListeners = new Set();
    this.attempt = 0;
    this.closedByUs = false;
    this.ws = null;
    this.heartbeat = null;
  }

  nextRef() {
    this.ref += 1;
    return String(this.ref);
  }

  onState(listener) {
    this.stateListeners.add(listener);
    listener(this.isOpen());
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.closedByUs = false;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.heartbeat = setInterval(() => this.send([null, this.nextRef(), "phoenix", "heartbeat", {}]), HEARTBEAT_MS);
      this.stateListeners.forEach((listener) => listener(true));
      this.channels.forEach((channel) => channel.rejoin());
    };
    ws.onmessage = (message) => this.receive(JSON.parse(message.data));
    ws.onclose = () => {
      clearInterval(this.heartbeat);
      this.stateListeners.forEach((listener) => listener(false));
      for (const { reject, timer } of this.pending.values()) {
        clearTimeout(timer);
        reject(new Error("the live connection closed"));
      }
      this.pending.clear();
      this.channels.forEach((channel) => (channel.joined = false));
      if (!this.closedByUs) {
        const wait = RECONNECT_MS[Math.min(this.attempt, RECONNECT_MS.length - 1)];
        this.attempt += 1;
        setTimeout(() => this.connect(), wait);
      }
    };
  }

  disconnect() {
    this.closedByUs = true;
    if (this.ws) this.ws.close(1000);
  }

  send(message) {
    if (this.isOpen()) this.ws.send(JSON.stringify(message));
  }

  request(joinRef, topic, event, payload) {
    const ref = this.nextRef();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new Error(`no reply to ${event} on ${topic}`));
      }, PUSH_TIMEOUT_MS);
      this.pending.set(ref, { resolve, reject, timer });
      this.send([joinRef, ref, topic, event, payload]);
    });
  }

  receive([joinRef, ref, topic, event, payload]) {
    if (event === "phx_reply" && this.pending.has(ref)) {
      const { resolve, reject, timer } = this.pending.get(ref);
      this.pending.delete(ref);
      clearTimeout(timer);
      if (payload.status === "ok") resolve(payload.response);
      else reject(Object.assign(new Error(payload.response?.reason || payload.status), { response: payload.response }));
      return;
    }
    for (const channel of this.channels) {
      if (channel.topic === topic && (joinRef === null || joinRef === channel.joinRef)) channel.dispatch(event, payload);
    }
  }

  channel(topic, params = {}) {
    const channel = new Channel(this, topic, params);
    this.channels.add(channel);
    return channel;
  }
}

export class Channel {
  constructor(socket, topic, params) {
    this.socket = socket;
    this.topic = topic;
    this.params = params;
    this.listeners = new Map();
    this.joinRef = null;
    this.joined = false;
    this.wanted = false;
    this.onJoinError = null;
  }

  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return this;
  }

  dispatch(event, payload) {
    (this.listeners.get(event) || []).forEach((listener) => listener(payload));
  }

  join() {
    this.wanted = true;
    return this.rejoin();
  }

  rejoin() {
    if (!this.wanted || !this.socket.isOpen()) return Promise.resolve(null);
    this.joinRef = this.socket.nextRef();
    return this.socket
      .request(this.joinRef, this.topic, "phx_join", this.params)
      .then((response) => {
        this.joined = true;
        this.dispatch("joined", response);
        return response;
      })
      .catch((error) => {
        if (this.onJoinError) this.onJoinError(error);
        return null;
      });
  }

  push(event, payload) {
    return this.socket.request(this.joinRef, this.topic, event, payload);
  }

  leave() {
    this.wanted = false;
    this.socket.channels.delete(this);
    if (this.joined) this.socket.send([this.joinRef, this.socket.nextRef(), this.topic, "phx_leave", {}]);
    this.joined = false;
  }
}
