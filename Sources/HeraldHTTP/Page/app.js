// Herald's chat page: sign in, threads, messages over REST, the open thread live over one EventSource
// (thread-stream.js). Every piece of user or model text goes into the DOM as text, never as markup.
import { ThreadStream } from "./thread-stream.js";

const THREADS_PER_PAGE = 20;
const TOKEN_KEY = "herald.token";
const USER_KEY = "herald.user";
const threadStateKey = (threadId) => `herald.thread.${threadId}`;

const $ = (id) => document.getElementById(id);

let session = { token: sessionStorage.getItem(TOKEN_KEY), user: sessionStorage.getItem(USER_KEY) };
let threadsCursor = null;
/** The open thread: its REST snapshot, the frames applied since, and its stream. */
let openThread = null;

class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A REST call as the signed-in user; throws APIError with Herald's message on any non-2xx answer. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    signOut("Your token was refused (expired or invalid): sign in again.");
  }
  if (!response.ok) {
    const detail = await response.json().catch(() => null);
    throw new APIError(response.status, detail?.error?.message ?? `${response.status} ${response.statusText}`);
  }
  return response.status === 204 ? null : response.json();
}

// ---- sign-in

function showSignedIn() {
  $("sign-in").hidden = true;
  $("chat").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = session.user;
  loadThreads();
  const fromHash = location.hash.slice(1);
  if (fromHash) selectThread(fromHash);
}

function showSignIn(message = "") {
  $("chat").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("who").textContent = "";
  $("sign-in-error").textContent = message;
}

function signIn(token, user) {
  session = { token, user };
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(USER_KEY, user);
  showSignedIn();
}

function signOut(message) {
  closeThread();
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  session = { token: null, user: null };
  history.replaceState(null, "", location.pathname);
  showSignIn(message);
}

/** The `sub` claim, for display only: Herald checks the signature. */
function userOfToken(token) {
  try {
    const payload = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    return JSON.parse(atob(payload)).sub ?? "?";
  } catch {
    return "?";
  }
}

$("dev-sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: $("user-name").value }),
  });
  if (response.status === 404) {
    return showSignIn("Signing in with a bare name is off (Herald has a real JWT secret): paste a token.");
  }
  const body = await response.json();
  if (!response.ok) return showSignIn(body.error?.message ?? "sign-in failed");
  signIn(body.token, body.user);
});

$("token-sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  const response = await fetch("/chats?limit=1", { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) return showSignIn("That token was refused.");
  signIn(token, userOfToken(token));
});

$("sign-out").addEventListener("click", () => signOut());

// ---- threads

async function loadThreads(more = false) {
  const query = new URLSearchParams({ limit: THREADS_PER_PAGE });
  if (more && threadsCursor) query.set("cursor", threadsCursor);
  const page = await api("GET", `/chats?${query}`);
  if (!more) $("thread-list").replaceChildren();
  for (const thread of page.threads) $("thread-list").append(threadItem(thread));
  threadsCursor = page.next_cursor;
  $("more-threads").hidden = !threadsCursor;
  markOpenThread();
}

function threadItem(thread) {
  const item = document.createElement("li");
  item.dataset.threadId = thread.id;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = thread.title || "Untitled";
  button.addEventListener("click", () => selectThread(thread.id));
  item.append(button);
  return item;
}

function markOpenThread() {
  for (const item of $("thread-list").children) {
    item.classList.toggle("open", item.dataset.threadId === openThread?.id);
  }
}

$("more-threads").addEventListener("click", () => loadThreads(true));

$("new-thread").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = $("new-thread-title").value.trim();
  const thread = await api("POST", "/chats", title ? { title } : {});
  $("new-thread-title").value = "";
  $("thread-list").prepend(threadItem(thread));
  selectThread(thread.id);
});

$("delete-thread").addEventListener("click", async () => {
  if (!openThread || !confirm("Delete this thread and all its messages?")) return;
  await api("DELETE", `/chats/${openThread.id}`);
  // The stream's thread_deleted frame closes the thread, here and in every other tab.
});

function selectThread(threadId) {
  if (location.hash.slice(1) !== threadId) history.replaceState(null, "", `#${threadId}`);
  if (openThread?.id !== threadId) openThreadNamed(threadId);
}

// ---- the open thread

/**
 * What the page knows of a thread beyond REST, kept per tab in sessionStorage so that a reload resumes where
 * it was: the newest event id applied, replies still streaming (their chunks by index), the latest run's status
 * and run errors.
 */
function loadThreadState(threadId) {
  const stored = JSON.parse(sessionStorage.getItem(threadStateKey(threadId)) ?? "null");
  return stored ?? { lastEventId: "", drafts: {}, run: null, errors: {} };
}

function saveThreadState(thread) {
  sessionStorage.setItem(threadStateKey(thread.id), JSON.stringify(thread.state));
}

function openThreadNamed(threadId) {
  closeThread();
  const thread = {
    id: threadId,
    state: loadThreadState(threadId),
    messages: new Map(),
    elements: new Map(),
    // Frames that arrive while the REST snapshot loads wait here, to be applied on top of it.
    pending: null,
    stream: null,
  };
  openThread = thread;
  $("messages").replaceChildren();
  $("thread-title").textContent = "…";
  $("delete-thread").hidden = false;
  $("composer").hidden = false;
  showNotice("");
  markOpenThread();
  thread.stream = new ThreadStream({
    threadId,
    token: session.token,
    lastEventId: thread.state.lastEventId,
    onFrame: (frame) => (thread.pending ? thread.pending.push(frame) : applyFrame(thread, frame)),
    onState: (state) => openThread === thread && showConnection(state),
    onGone: (reason) => openThread === thread && threadGone(thread, reason),
  });
  thread.stream.start();
  refetch(thread);
}

function closeThread() {
  openThread?.stream?.stop();
  openThread = null;
  $("messages").replaceChildren();
  $("thread-title").textContent = "No thread open";
  $("run-status").textContent = "";
  $("delete-thread").hidden = true;
  $("composer").hidden = true;
  showConnection("idle");
  markOpenThread();
}

/** Loads the thread over REST (the source of truth for stored messages), then applies the frames that came meanwhile. */
async function refetch(thread) {
  thread.pending ??= [];
  try {
    const snapshot = await api("GET", `/chats/${thread.id}`);
    if (openThread !== thread) return;
    $("thread-title").textContent = snapshot.thread.title || "Untitled";
    thread.messages = new Map(snapshot.messages.map((message) => [message.id, message]));
    for (const message of snapshot.messages) delete thread.state.drafts[message.id];
  } catch (error) {
    if (openThread !== thread) return;
    if (error.status === 404) return threadGone(thread, "not_found");
    showNotice(`Could not load the thread: ${error.message}`);
  }
  const frames = thread.pending;
  thread.pending = null;
  for (const frame of frames) applyFrame(thread, frame);
  render(thread);
}

function applyFrame(thread, { id, type, data }) {
  const { state } = thread;
  switch (type) {
    case "message_update":
      thread.messages.set(data.message.id, data.message);
      delete state.drafts[data.message.id];
      break;
    case "delta":
      // A stored message is complete: deltas replayed for it change nothing.
      if (!thread.messages.has(data.message_id)) {
        const draft = (state.drafts[data.message_id] ??= { runId: data.run_id, chunks: {} });
        draft.chunks[data.index] = data.delta;
      }
      break;
    case "run_status":
      state.run = { id: data.run_id, status: data.status };
      break;
    case "error":
      state.errors[data.run_id] = `${data.error.message} (${data.error.code})`;
      break;
    case "resync":
      // Frames were lost for this page: the stored messages are the truth; drafts complete with their final message.
      refetch(thread);
      break;
    case "thread_deleted":
      // thread-stream.js stops the stream and reports it through onGone.
      break;
  }
  // A resync's id is only stored once the refetch is done (by the frames after it): a reload before that resumes
  // from the old id, gets another resync and refetches again, rather than skipping what the refetch had not shown.
  if (id && type !== "resync") state.lastEventId = id;
  saveThreadState(thread);
  if (!thread.pending) render(thread);
}

function threadGone(thread, reason) {
  sessionStorage.removeItem(threadStateKey(thread.id));
  $("thread-list").querySelector(`[data-thread-id="${CSS.escape(thread.id)}"]`)?.remove();
  if (reason === "unauthorized") return signOut("Your token was refused: sign in again.");
  closeThread();
  history.replaceState(null, "", location.pathname);
  showNotice(reason === "deleted" ? "This thread was deleted." : "This thread does not exist (or is not yours).");
}

// ---- rendering

function render(thread) {
  const entries = [...thread.messages.values()].sort(
    (a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id),
  );
  for (const [id, draft] of Object.entries(thread.state.drafts)) {
    const text = Object.keys(draft.chunks)
      .map(Number)
      .sort((a, b) => a - b)
      .map((index) => draft.chunks[index])
      .join("");
    entries.push({ id, run_id: draft.runId, role: "assistant", content: text, status: "streaming" });
  }
  // A run's error shows on its newest message: the reply if there is one, else the user's message.
  const errorShownOn = new Map(entries.filter((entry) => entry.run_id).map((entry) => [entry.run_id, entry.id]));
  const list = $("messages");
  const stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  entries.forEach((message, position) => {
    const runError = errorShownOn.get(message.run_id) === message.id ? thread.state.errors[message.run_id] : "";
    const element = messageElement(thread, message, runError);
    if (list.children[position] !== element) list.insertBefore(element, list.children[position] ?? null);
  });
  while (list.children.length > entries.length) list.lastChild.remove();
  if (stickToBottom) list.scrollTop = list.scrollHeight;

  const status = thread.state.run?.status ?? "";
  $("run-status").textContent = status;
  $("run-status").dataset.status = status;
}

function messageElement(thread, message, runError) {
  let element = thread.elements.get(message.id);
  if (!element) {
    element = document.createElement("li");
    element.dataset.messageId = message.id;
    const role = document.createElement("span");
    role.className = "role";
    const content = document.createElement("p");
    content.className = "content";
    const error = document.createElement("p");
    error.className = "error";
    element.append(role, content, error);
    thread.elements.set(message.id, element);
  }
  const [role, content, error] = element.children;
  element.className = `message ${message.role}`;
  element.dataset.role = message.role;
  element.dataset.status = message.status;
  role.textContent = message.role === "user" ? "You" : "Assistant";
  if (content.textContent !== message.content) content.textContent = message.content;
  error.textContent = runError ? `Run failed: ${runError}` : "";
  error.hidden = !runError;
  return element;
}

function showConnection(state) {
  const labels = { idle: "no thread open", connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", offline: "offline" };
  $("connection").dataset.state = state;
  $("connection").textContent = labels[state];
}

function showNotice(text) {
  $("thread-notice").textContent = text;
  $("thread-notice").hidden = !text;
}

// ---- sending

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const thread = openThread;
  const content = $("message-input").value;
  if (!thread || !content.trim()) return;
  $("send").disabled = true;
  try {
    const { message, run } = await api("POST", `/chats/${thread.id}/send`, { content });
    $("message-input").value = "";
    showNotice("");
    if (openThread !== thread) return;
    // Shown at once; the stream's message_update for the same id changes nothing.
    thread.messages.set(message.id, message);
    // The stream may already have said `running`: the send's `queued` must not go back on it.
    if (thread.state.run?.id !== run.id) thread.state.run = { id: run.id, status: run.status };
    if (!thread.pending) render(thread);
  } catch (error) {
    showNotice(`Not sent: ${error.message}`);
  } finally {
    $("send").disabled = false;
  }
});

$("message-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

addEventListener("hashchange", () => {
  const threadId = location.hash.slice(1);
  if (session.token && threadId) selectThread(threadId);
});

if (session.token) showSignedIn();
else showSignIn();
