// One thread's live frames from Herald over Server-Sent Events: the EventSource code path a frontend copies.
//
//   const stream = new ThreadStream({ threadId, token, lastEventId, onFrame, onState, onGone });
//   stream.start();   ...   stream.stop();
//
// - Resume: the first connection passes `?last_event_id=` (what the page stored before a reload); the browser's
//   own reconnects send `Last-Event-ID`. Herald replays what was missed, so every frame arrives once, in order.
// - Stale connections: Herald sends a `heartbeat` event every interval (`?heartbeat=event`; plain comments are
//   invisible to EventSource). No frame or heartbeat for twice the interval: reconnect.
// - Refused connections (EventSource gives up on any HTTP error): ask the REST API why; 404 and 401 are final
//   (`onGone`), anything else is retried with backoff.

const FRAME_EVENTS = ["message_update", "delta", "run_status", "error", "thread_deleted", "resync"];
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 15_000;

/** Orders two Herald event ids (`<milliseconds>-<sequence>`): negative, zero or positive. */
export function compareEventIds(a, b) {
  const [aTime, aSequence] = a.split("-").map(Number);
  const [bTime, bSequence] = b.split("-").map(Number);
  return aTime - bTime || aSequence - bSequence;
}

export class ThreadStream {
  #threadId;
  #token;
  #onFrame;
  #onState;
  #onGone;
  #lastEventId;
  #source = null;
  #state = "";
  // Until the first heartbeat tells the real interval: twice Herald's default of 15 s.
  #staleAfterMs = 30_000;
  #watchdog = 0;
  #retryTimer = 0;
  #retryDelayMs = FIRST_RETRY_MS;
  #stopped = false;

  /**
   * @param {object} options
   * @param {string} options.threadId
   * @param {string} options.token   user token, sent as `?access_token=` (EventSource cannot set headers)
   * @param {string} [options.lastEventId]   resume after this id (stored before a reload)
   * @param {(frame: {id: string, type: string, data: object}) => void} options.onFrame   each frame once, in order
   * @param {(state: "connecting" | "connected" | "reconnecting" | "offline") => void} options.onState
   * @param {(reason: "deleted" | "not_found" | "unauthorized") => void} options.onGone   the stream is over for good
   */
  constructor({ threadId, token, lastEventId = "", onFrame, onState, onGone }) {
    this.#threadId = threadId;
    this.#token = token;
    this.#lastEventId = lastEventId;
    this.#onFrame = onFrame;
    this.#onState = onState;
    this.#onGone = onGone;
  }

  start() {
    addEventListener("online", this.#wentOnline);
    addEventListener("offline", this.#wentOffline);
    this.#setState("connecting");
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    removeEventListener("online", this.#wentOnline);
    removeEventListener("offline", this.#wentOffline);
    clearTimeout(this.#retryTimer);
    this.#disconnect();
  }

  #connect() {
    this.#disconnect();
    clearTimeout(this.#retryTimer);
    const query = new URLSearchParams({ access_token: this.#token, heartbeat: "event" });
    if (this.#lastEventId) query.set("last_event_id", this.#lastEventId);
    const source = new EventSource(`/chats/sse/${encodeURIComponent(this.#threadId)}?${query}`);
    source.onopen = () => {
      this.#retryDelayMs = FIRST_RETRY_MS;
      this.#setState("connected");
      this.#armWatchdog();
    };
    source.addEventListener("heartbeat", (event) => {
      this.#staleAfterMs = 2000 * JSON.parse(event.data).interval_seconds;
      this.#armWatchdog();
    });
    for (const type of FRAME_EVENTS) source.addEventListener(type, (event) => this.#receive(event));
    this.#source = source;
  }

  #disconnect() {
    clearTimeout(this.#watchdog);
    this.#source?.close();
    this.#source = null;
  }

  #receive(event) {
    // Herald's `error` frames and EventSource's own connection errors share the name; only frames carry data.
    if (!(event instanceof MessageEvent)) return this.#connectionFailed();
    this.#armWatchdog();
    const id = event.lastEventId;
    // A frame without an id (a resync) keeps the previous one as lastEventId; anything else at or before the
    // newest id seen was already delivered.
    if (event.type !== "resync" && id && this.#lastEventId && compareEventIds(id, this.#lastEventId) <= 0) return;
    if (id) this.#lastEventId = id;
    this.#onFrame({ id, type: event.type, data: JSON.parse(event.data) });
    if (event.type === "thread_deleted") {
      this.stop();
      this.#onGone("deleted");
    }
  }

  #connectionFailed() {
    if (this.#stopped) return;
    clearTimeout(this.#watchdog);
    if (this.#source?.readyState === EventSource.CONNECTING) {
      // The browser retries by itself (after Herald's `retry:` of 3 s), with Last-Event-ID.
      this.#setState(navigator.onLine ? "reconnecting" : "offline");
      return;
    }
    this.#disconnect();
    this.#recover();
  }

  async #recover() {
    this.#setState("offline");
    let status = 0;
    try {
      const response = await fetch(`/chats/${encodeURIComponent(this.#threadId)}`, {
        headers: { Authorization: `Bearer ${this.#token}` },
      });
      status = response.status;
    } catch {
      // Herald or the network is down: retried below like any other failure.
    }
    if (this.#stopped) return;
    if (status === 404 || status === 401) {
      this.stop();
      this.#onGone(status === 404 ? "not_found" : "unauthorized");
      return;
    }
    this.#retryTimer = setTimeout(() => this.#connect(), this.#retryDelayMs);
    this.#retryDelayMs = Math.min(2 * this.#retryDelayMs, MAX_RETRY_MS);
  }

  #armWatchdog() {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => {
      // Open but silent: a dead proxy or a hung node. A fresh connection resumes after the newest id seen.
      this.#setState("reconnecting");
      this.#connect();
    }, this.#staleAfterMs);
  }

  #wentOnline = () => {
    if (this.#stopped) return;
    if (this.#source?.readyState === EventSource.OPEN) this.#setState("connected");
    else this.#connect();
  };

  #wentOffline = () => this.#setState("offline");

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#onState(state);
  }
}
