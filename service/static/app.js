// The agent-ng page: ask on a thread and watch the run as it happens.
// POST /threads/{id}/runs/stream answers Server-Sent Events; fetch() and a stream reader
// parse them (EventSource cannot POST). Every event is one AgentEvent (see agent_ng/contract.py).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const KEY_STORAGE = "agent-ng-api-key";

const page = {
  threadId: null,
  controller: null,
  ticking: null,
  views: new Set(),
  history: [],
};

// ---- HTTP --------------------------------------------------------------------------------

class Unauthorized extends Error {}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = { ...(options.headers || {}) };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("#key-form").hidden = false;
    $("#api-key").focus();
    throw new Unauthorized("this service needs its API key");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new HttpError(response.status, describeError(response.status, body));
  }
  return response;
}

function describeError(status, body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
  return `${status}: ${detail || "request failed"}`;
}

// Parse a text/event-stream body, calling onEvent(type, data) for each event.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    // A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
    const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
    buffer = lines.pop() + buffer.slice(cut);
    for (const line of lines) {
      if (line === "") {
        if (data.length) onEvent(type, JSON.parse(data.join("\n")));
        type = "message";
        data = [];
      } else if (line.startsWith("event:")) {
        type = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
}

// ---- Formatting --------------------------------------------------------------------------

function seconds(value) {
  if (value == null || Number.isNaN(value)) return "";
  return value < 10 ? `${value.toFixed(2)}s` : `${value.toFixed(1)}s`;
}

function callLabel(args) {
  if (args && typeof args === "object" && !Array.isArray(args)) {
    return Object.entries(args).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  }
  return args == null ? "" : JSON.stringify(args);
}

function laneLabel(name, args) {
  const values = args && typeof args === "object" ? Object.values(args) : [];
  const first = values.length ? String(values[0]) : "";
  return first ? `${name} ${first.length > 14 ? first.slice(0, 13) + "…" : first}` : name;
}

function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

// ---- One tool call -----------------------------------------------------------------------

class ToolRow {
  constructor(id, name, args) {
    this.id = id;
    this.el = $("#row-template").content.firstElementChild.cloneNode(true);
    this.el.dataset.callId = id;
    $(".name", this.el).textContent = name;
    $(".args", this.el).textContent = `(${callLabel(args)})`;
    this.state = "queued";
    this.fraction = null;
    this.startT = null; // run-relative server seconds
    this.startedAt = null; // local clock, for a live elapsed time
    this.elapsed = null; // final, from the server
    this.eta = null;
    this.etaAt = null;
  }

  setState(state) {
    this.state = state;
    this.el.dataset.state = state;
  }

  start(event) {
    this.setState("running");
    this.startT = event.t;
    this.startedAt = performance.now();
    this.setEta(event.eta_s);
  }

  progress(event) {
    if (this.state === "queued") this.start(event);
    this.fraction = event.progress;
    if (event.message) this.note(event.message);
    this.setEta(event.eta_s);
    this.draw();
  }

  finish(state, elapsed, error) {
    this.setState(state);
    this.elapsed = elapsed ?? this.liveElapsed();
    if (this.startT == null && this.elapsed != null) this.startT = 0;
    if (state === "done") this.fraction = 1;
    this.eta = null;
    if (error) this.note(error);
    this.draw();
  }

  result(content) {
    if (this.state !== "error" && content != null) this.note(`→ ${content}`);
  }

  note(text) {
    const note = $(".note", this.el);
    note.textContent = text;
    note.title = text;
  }

  setEta(eta) {
    this.eta = eta;
    this.etaAt = performance.now();
  }

  liveElapsed() {
    return this.startedAt == null ? null : (performance.now() - this.startedAt) / 1000;
  }

  currentElapsed() {
    return this.elapsed ?? this.liveElapsed();
  }

  draw() {
    const running = this.state === "running";
    const percent = this.fraction == null ? null : Math.round(this.fraction * 100);
    const bar = $(".bar", this.el);
    bar.classList.toggle("indeterminate", running && percent == null);
    $(".fill", bar).style.width = `${percent ?? (this.state === "queued" ? 0 : 100)}%`;
    if (percent == null) bar.removeAttribute("aria-valuenow");
    else bar.setAttribute("aria-valuenow", String(percent));
    $(".percent", this.el).textContent = percent == null ? "" : `${percent}%`;
    $(".elapsed", this.el).textContent = seconds(this.currentElapsed());
    const left = running && this.eta != null ? Math.max(0, this.eta - (performance.now() - this.etaAt) / 1000) : null;
    $(".eta", this.el).textContent = left == null ? "" : `ETA ${seconds(left)}`;
  }
}

// ---- The tools of one model turn, with their timeline ------------------------------------

class ToolGroup {
  constructor() {
    this.el = $("#tools-template").content.firstElementChild.cloneNode(true);
    this.rows = new Map();
    this.lanes = new Map();
  }

  add(id, name, args) {
    const row = new ToolRow(id, name, args);
    this.rows.set(id, row);
    $(".rows", this.el).append(row.el);
    const lane = document.createElement("div");
    lane.className = "lane";
    lane.innerHTML = '<span class="lane-name"></span><span class="track"><span class="span"></span></span>';
    $(".lane-name", lane).textContent = laneLabel(name, args);
    $(".lane-name", lane).title = `${name}(${callLabel(args)})`;
    lane.dataset.callId = id;
    $(".lanes", this.el).append(lane);
    this.lanes.set(id, lane);
    row.draw();
    return row;
  }

  draw() {
    const rows = [...this.rows.values()];
    const running = rows.filter((r) => r.state === "running").length;
    this.peak = Math.max(this.peak || 0, running);
    $(".count", this.el).textContent = `${rows.length} tool call${rows.length === 1 ? "" : "s"}`;
    $(".parallel", this.el).textContent =
      running ? `${running} running now` : this.peak > 1 ? `up to ${this.peak} ran at once` : "";
    const timed = rows.filter((r) => r.startT != null);
    this.el.classList.toggle("timed", timed.length > 0);
    for (const row of this.rows.values()) row.draw();
    if (!timed.length) return;
    const origin = Math.min(...timed.map((r) => r.startT));
    const end = Math.max(...timed.map((r) => r.startT + (r.currentElapsed() ?? 0)));
    const span = Math.max(end - origin, 0.001);
    for (const row of timed) {
      const bar = $(".span", this.lanes.get(row.id));
      bar.dataset.state = row.state;
      bar.style.left = `${((row.startT - origin) / span) * 100}%`;
      bar.style.width = `${Math.max(((row.currentElapsed() ?? 0) / span) * 100, 0.5)}%`;
    }
    $(".axis-end", this.el).textContent = seconds(span);
  }
}

// ---- One question and everything the run showed ------------------------------------------

// What the page does with each AgentEvent type (agent_ng/contract.py): every type has an entry,
// doing nothing on purpose included. tests/unit/test_event_contract.py checks none is missing.
const EVENT_HANDLERS = {
  run_start: () => {}, // the question is already on the page
  content: (view, event) => {
    view.answer().textContent += event.text;
  },
  tool_call: (view, event) => {
    view.addCall(event.tool_call_id, event.name, event.args);
  },
  tool_start: (view, event, row) => {
    (row || view.addCall(event.tool_call_id, event.name, event.args)).start(event);
  },
  tool_progress: (view, event, row) => row?.progress(event),
  tool_result: (view, event, row) => row?.result(event.content),
  tool_complete: (view, event, row) => {
    row?.finish("done", event.elapsed_s);
    if (row && event.cached) row.el.dataset.cached = "true";
  },
  tool_error: (view, event, row) => row?.finish("error", event.elapsed_s, event.error),
  interrupt: () => {}, // the page does not answer approvals: run_end says the run is interrupted
  run_end: (view, event) => view.end(event),
};

class TurnView {
  constructor(question) {
    this.el = $("#turn-template").content.firstElementChild.cloneNode(true);
    $(".question", this.el).textContent = question;
    this.groups = [];
    this.rows = new Map();
    this.last = null; // the step being appended to: an answer element or a ToolGroup
    $("#empty").hidden = true;
    $("#conversation").append(this.el);
  }

  answer() {
    if (!(this.last instanceof HTMLElement)) {
      this.last = document.createElement("div");
      this.last.className = "answer";
      $(".steps", this.el).append(this.last);
    }
    return this.last;
  }

  group() {
    if (!(this.last instanceof ToolGroup)) {
      this.last = new ToolGroup();
      this.groups.push(this.last);
      $(".steps", this.el).append(this.last.el);
    }
    return this.last;
  }

  addCall(id, name, args) {
    const row = this.group().add(id, name, args);
    this.rows.set(id, row);
    return row;
  }

  handle(event) {
    EVENT_HANDLERS[event.type]?.(this, event, this.rows.get(event.tool_call_id));
    this.draw();
  }

  end(event) {
    this.el.dataset.status = event.status;
    if (event.status !== "done") {
      const note = document.createElement("div");
      note.className = `run-note ${event.status}`;
      note.textContent = event.error ? `Run failed: ${event.error}` : `Run ended: ${event.status.replace("_", " ")}`;
      $(".steps", this.el).append(note);
    }
  }

  // The run was cancelled from here: calls still going are marked as stopped.
  stopped() {
    for (const row of this.rows.values()) {
      if (row.state === "running" || row.state === "queued") row.finish("error", null, "stopped");
    }
    this.end({ status: "cancelled" });
  }

  draw() {
    for (const group of this.groups) group.draw();
  }
}

// ---- Runs --------------------------------------------------------------------------------

function setStatus(text, kind = "") {
  const status = $("#status");
  status.textContent = text;
  status.dataset.kind = kind;
}

function setRunning(running) {
  $("#send").hidden = running;
  $("#stop").hidden = !running;
  $("#question").disabled = running;
  if (running && !page.ticking) {
    page.ticking = setInterval(() => page.views.forEach((v) => v.draw()), 100);
  } else if (!running && page.ticking) {
    clearInterval(page.ticking);
    page.ticking = null;
  }
}

async function ask(question) {
  const view = new TurnView(question);
  page.views.add(view);
  page.controller = new AbortController();
  setRunning(true);
  setStatus("running…", "running");
  view.el.scrollIntoView({ block: "start", behavior: "smooth" });
  try {
    const response = await api(`/threads/${encodeURIComponent(page.threadId)}/runs/stream`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ input: question }),
      signal: page.controller.signal,
    });
    await readEvents(response, (type, event) => view.handle(event));
    const status = view.el.dataset.status || "ended";
    setStatus(status === "done" ? "done" : status.replace("_", " "), status === "done" ? "done" : "error");
  } catch (error) {
    if (error.name === "AbortError") {
      view.stopped();
      setStatus("stopped", "error");
    }
    else setStatus(error.message, "error");
    if (error instanceof Unauthorized) view.el.remove();
  } finally {
    setRunning(false);
    view.draw();
    page.views.delete(view);
    page.controller = null;
    loadThreads();
  }
}

// ---- Threads -----------------------------------------------------------------------------

function newThreadId() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2)).replace(/-/g, "").slice(0, 12);
}

function showThread(id) {
  page.threadId = id;
  $("#thread-id").textContent = id;
  history.replaceState(null, "", `#thread=${id}`);
  for (const li of document.querySelectorAll("#threads li")) {
    li.classList.toggle("active", li.dataset.threadId === id);
  }
}

function clearConversation() {
  for (const turn of document.querySelectorAll("#conversation .turn")) turn.remove();
  $("#empty").hidden = false;
}

async function loadThreads() {
  try {
    const threads = await (await api("/threads")).json();
    const list = $("#threads");
    $("#no-threads").hidden = threads.length > 0;
    list.replaceChildren(
      ...threads.map((t) => {
        const li = document.createElement("li");
        li.dataset.threadId = t.thread_id;
        li.classList.toggle("active", t.thread_id === page.threadId);
        li.innerHTML = '<button type="button"><span class="title"></span><span class="meta"></span></button>';
        $(".title", li).textContent = t.title || t.thread_id;
        $(".meta", li).textContent = `${ago(t.updated_at)} · ${t.messages} messages`;
        $("button", li).addEventListener("click", () => openThread(t.thread_id));
        return li;
      }),
    );
  } catch (error) {
    if (!(error instanceof Unauthorized)) setStatus(error.message, "error");
  }
}

async function openThread(id) {
  if (page.controller) return;
  showThread(id);
  clearConversation();
  let state;
  try {
    state = await (await api(`/threads/${encodeURIComponent(id)}`)).json();
    if (page.controller || page.threadId !== id) return; // a run or another thread came first
  } catch (error) {
    if (page.controller || page.threadId !== id) return;
    if (error.status === 404) setStatus("new thread");
    else if (!(error instanceof Unauthorized)) setStatus(`thread ${id}: ${error.message}`, "error");
    return;
  }
  renderHistory(state.messages);
  setStatus(`loaded ${state.messages.length} messages`, "done");
}

// History has no timings: rows end green or red without elapsed times, and no timeline.
function renderHistory(messages) {
  let view = null;
  page.history = [];
  for (const message of messages) {
    if (message.role === "user") {
      view = new TurnView(message.content);
      page.history.push(view);
      view.el.dataset.status = "done";
    } else if (!view) {
      continue;
    } else if (message.role === "assistant") {
      if (message.content) view.answer().textContent += message.content;
      for (const call of message.tool_calls) view.addCall(call.id, call.name, call.args);
    } else if (message.role === "tool") {
      const row = view.rows.get(message.tool_call_id);
      if (!row) continue;
      row.result(message.content);
      row.finish(message.status === "error" ? "error" : "done", null, message.status === "error" ? message.content : null);
    }
  }
  for (const turn of page.history) turn.draw();
  for (const turn of document.querySelectorAll("#conversation .turn")) turn.scrollIntoView({ block: "end" });
}

// ---- Wiring ------------------------------------------------------------------------------

function submit() {
  const input = $("#question");
  const question = input.value.trim();
  if (!question || page.controller) return;
  input.value = "";
  ask(question);
}

document.addEventListener("DOMContentLoaded", () => {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("thread");
  showThread(fromHash || newThreadId());
  if (fromHash) openThread(fromHash);

  $("#ask").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  $("#question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      submit();
    }
  });
  $("#stop").addEventListener("click", () => page.controller?.abort());
  $("#new-thread").addEventListener("click", () => {
    if (page.controller) return;
    showThread(newThreadId());
    clearConversation();
    setStatus("ready");
    $("#question").focus();
  });
  for (const example of document.querySelectorAll(".example")) {
    example.addEventListener("click", () => {
      $("#question").value = example.textContent;
      submit();
    });
  }
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#api-key").value);
    $("#key-form").hidden = true;
    setStatus("key saved", "done");
    loadThreads();
    if (!document.querySelector("#conversation .turn")) openThread(page.threadId);
  });
  loadThreads();
  $("#question").focus();
});
