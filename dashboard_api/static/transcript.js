// The transcript page's script: loads a session, renders its events as a person reads them,
// follows the live tail, and sends messages and approval decisions. No framework, no build step.
// Every piece of event data reaches the page through textContent or attributes, never as HTML.
(() => {
  "use strict";

  const TOKEN_KEY = "transcript-token";
  const PAGE_LIMIT = 200;
  const SILENCE_MS = 45000; // three keep-alive periods without a byte: the connection is dead
  const MAX_BACKOFF_MS = 30000;
  const body = document.body;
  const agentId = body.dataset.agentId;
  const sessionId = body.dataset.sessionId;
  const pollMs = (Number(body.dataset.pollSeconds) || 15) * 1000;
  const base =
    "/dashboard/agents/" + encodeURIComponent(agentId) +
    "/sessions/" + encodeURIComponent(sessionId);

  const $ = (id) => document.getElementById(id);
  const ui = {
    title: $("title"),
    status: $("session-status"),
    queued: $("queued"),
    cost: $("total-cost"),
    connection: $("connection"),
    reconnect: $("reconnect"),
    notice: $("notice"),
    loading: $("loading"),
    timeline: $("timeline"),
    working: $("working"),
    form: $("composer"),
    text: $("composer-text"),
    send: $("send"),
    note: $("composer-note"),
  };

  const state = {
    token: null,
    lastSeq: 0,
    status: "loading", // idle | running | archived
    waitingApproval: false,
    queued: 0,
    turns: [], // {number, list, costEl, tokens}
    current: null,
    userTurns: 0,
    usage: new Map(), // turn number -> usage row
    usageAvailable: true,
    cards: new Map(), // tool_use_id -> approval card
    confirmations: new Map(), // tool_use_id -> "allow" | "deny" (seen before its card)
    streaming: new Map(), // runtime event id -> entry of an agent message being written
    finals: new Set(), // runtime ids of agent messages already final
    refreshTimer: null,
    queuedNote: false, // the composer says "Queued" until the queue is empty again
    loaded: false, // history rendered: from now on events are live
    fatal: false,
    attempt: 0,
    wake: null,
    everLive: false,
  };

  // -- small DOM helpers ----------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function clockTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return null;
    return h("time", { datetime: date.toISOString(), title: date.toLocaleString() },
      date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }));
  }

  function textOf(content) {
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) return "";
    return content
      .map((block) => {
        if (!block || typeof block !== "object") return "";
        if (block.type === "text" && typeof block.text === "string") return block.text;
        return block.type ? "[" + block.type + "]" : "";
      })
      .filter(Boolean)
      .join("\n");
  }

  function pretty(value) {
    try {
      return JSON.stringify(value, null, 2);
    } catch (_err) {
      return String(value);
    }
  }

  function number(n) {
    return Number(n || 0).toLocaleString("en-US");
  }

  function nearBottom() {
    const doc = document.documentElement;
    return doc.scrollHeight - (window.scrollY + window.innerHeight) < 160;
  }

  function keepScrolled(wasNear) {
    if (wasNear) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  // -- the access token and the JSON routes ---------------------------------------------------

  function takeToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const fromFragment = fragment.get("token");
    if (fromFragment) {
      try {
        sessionStorage.setItem(TOKEN_KEY, fromFragment);
      } catch (_err) {
        // storage refused (private mode): the token lives in memory for this page only
      }
      history.replaceState(null, "", location.pathname + location.search);
      return fromFragment;
    }
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_err) {
      return null;
    }
  }

  class HttpError extends Error {
    constructor(status, payload) {
      const error = payload && payload.error;
      super((error && error.message) || "HTTP " + status);
      this.status = status;
      this.code = error && error.code;
    }
  }

  async function api(method, path, payload) {
    const headers = { Authorization: "Bearer " + state.token, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(base + path, init);
    let data = null;
    if ((response.headers.get("Content-Type") || "").includes("application/json")) {
      data = await response.json().catch(() => null);
    }
    if (!response.ok) {
      const error = new HttpError(response.status, data);
      if (response.status === 401) stop("signed-out", error.message);
      throw error;
    }
    return data;
  }

  // -- page states ----------------------------------------------------------------------------

  function showNotice(kind, message) {
    ui.notice.dataset.kind = kind;
    ui.notice.textContent = message;
    ui.notice.hidden = false;
  }

  function setConnection(kind, message) {
    ui.connection.dataset.state = kind;
    ui.connection.textContent = message;
    ui.reconnect.hidden = kind !== "lost";
  }

  function stop(kind, message) {
    if (state.fatal) return;
    state.fatal = true;
    const messages = {
      "no-token":
        "No access token. Open this page with #token=<access token> at the end of its " +
        "address (`python app.py demo` and `python app.py token` print one).",
      "signed-out": "The access token was refused (" + message + "). Open the page again " +
        "with a fresh #token=… to continue.",
      "not-found": "No such session in your workspace.",
    };
    showNotice("error", messages[kind] || message);
    setConnection("closed", "Not connected");
    ui.loading.hidden = true;
    const notes = {
      "not-found": "There is no session to write to.",
      error: "Reload the page to try again.",
    };
    setComposer(false, notes[kind] || "Open the page with a valid token to send messages.");
    if (state.wake) state.wake();
  }

  function setComposer(enabled, note, kind) {
    ui.text.disabled = !enabled;
    ui.send.disabled = !enabled;
    ui.note.textContent = note || "";
    if (kind) ui.note.dataset.kind = kind;
    else delete ui.note.dataset.kind;
  }

  function applySession(session) {
    if (!session) return;
    if (session.title) {
      ui.title.textContent = session.title;
      document.title = session.title + " · transcript";
    }
    state.queued = Number(session.queued) || 0;
    if (session.status === "archived") markArchived();
    else if (state.status !== "archived") setStatus(session.status);
    renderStatus();
  }

  function setStatus(status) {
    if (state.status === "archived") return;
    state.status = status;
    if (status !== "running") state.waitingApproval = false;
    renderStatus();
  }

  function renderStatus() {
    const labels = { idle: "Idle", running: "Running", archived: "Archived", loading: "Loading…" };
    let label = labels[state.status] || state.status;
    if (state.status === "running" && state.waitingApproval) label = "Waiting for approval";
    ui.status.dataset.state = state.status;
    ui.status.textContent = label;
    const showQueued = state.status === "running" && state.queued > 0;
    ui.queued.hidden = !showQueued;
    ui.queued.textContent = showQueued ? state.queued + " queued" : "";
    const working = state.status === "running";
    if (state.queuedNote && state.queued === 0) {
      state.queuedNote = false; // the message we queued has been sent to the agent
      if (!ui.text.disabled) setComposer(true, "Sent.");
    }
    ui.working.hidden = !working;
    ui.working.textContent = state.waitingApproval
      ? "The agent is waiting for a decision on a tool call."
      : working ? "The agent is working on a reply…" : "";
  }

  function markArchived() {
    state.status = "archived";
    state.waitingApproval = false;
    body.dataset.archived = "true";
    renderStatus();
    showNotice("archived", "This session is archived: it is read-only and takes no new messages.");
    setComposer(false, "Archived sessions take no new messages.");
    for (const card of state.cards.values()) if (!card.decided) card.disable();
  }

  // -- the timeline ---------------------------------------------------------------------------

  function newTurn(numbered) {
    if (numbered) {
      state.userTurns += 1;
      // A message reaches the history only once the turn before it ended: a card still open
      // from then can no longer be answered.
      for (const card of state.cards.values()) if (!card.decided) card.expire();
    }
    const n = numbered ? state.userTurns : 0;
    const heading = h("h2", { id: "turn-" + n + "-" + state.turns.length },
      n ? "Turn " + n : "Session start");
    const costEl = h("p", { class: "turn-cost" });
    const list = h("ol", { class: "entries" });
    const section = h("li", { class: "turn", "data-turn": n, "aria-labelledby": heading.id },
      h("div", { class: "turn-head" }, heading, costEl), list);
    ui.timeline.append(section);
    const turn = { number: n, list, costEl, tokens: null };
    state.turns.push(turn);
    state.current = turn;
    return turn;
  }

  function entry(kind, event, who, ...content) {
    const item = h("li", {
      class: "entry entry-" + kind,
      "data-type": event.type || kind,
      "data-seq": event.seq,
    }, h("div", { class: "bubble" },
      h("div", { class: "who" }, h("span", {}, who), clockTime(event.created_at)),
      ...content));
    (state.current || newTurn(false)).list.append(item);
    return item;
  }

  function line(event, text, kind) {
    const item = h("li", {
      class: "entry line" + (kind ? " line-" + kind : ""),
      "data-type": event.type,
      "data-seq": event.seq,
    }, text);
    (state.current || newTurn(false)).list.append(item);
    return item;
  }

  function textBlock(text) {
    return h("p", { class: "text" }, text);
  }

  function agentMessage(event, data) {
    const id = data.id || event.id;
    const text = textOf(data.content);
    state.finals.add(id);
    const live = state.streaming.get(id);
    if (live) {
      state.streaming.delete(id);
      live.querySelector(".text").textContent = text;
      live.classList.remove("streaming");
      live.removeAttribute("aria-busy");
      live.dataset.seq = event.seq;
      return;
    }
    entry("agent", event, "Agent", textBlock(text));
  }

  function onDelta(delta) {
    if (!delta || typeof delta.event_id !== "string" || typeof delta.text !== "string") return;
    if (state.finals.has(delta.event_id)) return;
    const wasNear = nearBottom();
    let item = state.streaming.get(delta.event_id);
    if (!item) {
      item = entry("agent", { type: "agent.message", created_at: new Date().toISOString() },
        "Agent", textBlock(""));
      item.classList.add("streaming");
      item.setAttribute("aria-busy", "true");
      item.dataset.eventId = delta.event_id;
      state.streaming.set(delta.event_id, item);
    }
    item.querySelector(".text").append(delta.text);
    keepScrolled(wasNear);
  }

  function toolUse(event, data, label) {
    const input = data.input === undefined ? null :
      h("details", {}, h("summary", {}, "Input"), h("pre", {}, pretty(data.input)));
    entry("tool", event, label + ": " + (data.name || "tool"), input);
  }

  function toolResult(event, data, label) {
    const text = textOf(data.content) || (data.is_error ? "(error)" : "(no output)");
    const item = entry(data.is_error ? "error" : "tool", event,
      label + (data.is_error ? " (error)" : ""), h("pre", {}, text));
    if (data.tool_use_id) item.dataset.toolUseId = data.tool_use_id;
  }

  function stopReason(data) {
    const reason = data.stop_reason && data.stop_reason.type;
    const reasons = {
      end_turn: "end of turn",
      requires_action: "waiting for a decision",
      retries_exhausted: "stopped: retries exhausted",
    };
    return reason ? reasons[reason] || reason : null;
  }

  function approvalCard(event, data) {
    const toolUseId = String(data.tool_use_id || "");
    const tool = String(data.tool_name || "tool");
    const key = "approval-" + (event.seq || state.cards.size);
    const reason = h("input", { type: "text", id: key + "-reason", autocomplete: "off" });
    const outcome = h("p", { class: "outcome", role: "status", tabindex: "-1" });
    const approve = h("button", { type: "button", class: "primary" }, "Approve");
    const deny = h("button", { type: "button" }, "Deny");
    const title = h("h3", { id: key + "-title" }, "Approval needed: " + tool);
    const cardEl = h("div", { class: "approval", role: "group", "aria-labelledby": title.id,
      "data-state": "pending", "data-tool-use-id": toolUseId },
      title,
      h("p", { class: "text" }, "The agent wants to run " + tool + " with this input:"),
      h("pre", {}, pretty(data.input === undefined ? {} : data.input)),
      h("label", { for: reason.id }, "Reason (optional)"), reason,
      h("div", { class: "actions" }, approve, deny),
      outcome);
    const item = h("li", { class: "entry entry-approval", "data-type": event.type,
      "data-seq": event.seq }, cardEl);
    (state.current || newTurn(false)).list.append(item);

    const card = {
      decided: false,
      disable() {
        approve.disabled = true;
        deny.disabled = true;
        reason.disabled = true;
      },
      expire() {
        card.decided = true;
        card.disable();
        cardEl.dataset.state = "expired";
        outcome.textContent = "No decision was taken before the turn ended.";
      },
      settle(decision, detail) {
        if (card.decided) return;
        card.decided = true;
        card.disable();
        const focused = cardEl.contains(document.activeElement);
        cardEl.dataset.state = decision || "unknown";
        const words = { allow: "Approved", deny: "Denied" };
        outcome.textContent = (words[decision] || "Decided") + (detail ? " " + detail : "") + ".";
        if (focused) outcome.focus();
      },
    };
    async function decide(decision) {
      card.disable();
      outcome.textContent = decision === "allow" ? "Approving…" : "Denying…";
      const payload = { decision };
      if (reason.value.trim()) payload.reason = reason.value.trim();
      try {
        const answer = await api("POST", "/approvals/" + encodeURIComponent(toolUseId), payload);
        card.settle(answer && answer.decision ? answer.decision : decision,
          answer && answer.decided_by ? "by " + answer.decided_by : "");
      } catch (err) {
        if (err.status === 409) {
          card.settle(state.confirmations.get(toolUseId) || null, "already, elsewhere");
          return;
        }
        if (err.status === 401) return;
        outcome.textContent = "Could not send the decision: " + err.message;
        if (!card.decided && state.status !== "archived") {
          approve.disabled = false;
          deny.disabled = false;
          reason.disabled = false;
        }
      }
    }
    approve.addEventListener("click", () => decide("allow"));
    deny.addEventListener("click", () => decide("deny"));
    state.cards.set(toolUseId, card);
    const seen = state.confirmations.get(toolUseId);
    if (seen) card.settle(seen, "");
    else if (state.status === "archived") card.disable();
  }

  function confirmation(event, data) {
    const id = String(data.tool_use_id || "");
    const result = data.result === "deny" ? "deny" : "allow";
    state.confirmations.set(id, result);
    const card = state.cards.get(id);
    if (card) card.settle(result, "");
    line(event, result === "allow" ? "Tool call approved" : "Tool call denied");
  }

  function addTokens(turn, usage) {
    if (!usage || typeof usage !== "object") return;
    const t = turn.tokens || (turn.tokens = { input: 0, output: 0, cached: 0 });
    t.input += Number(usage.input_tokens) || 0;
    t.output += Number(usage.output_tokens) || 0;
    t.cached += (Number(usage.cache_read_input_tokens) || 0) +
      (Number(usage.cache_creation_input_tokens) || 0);
    renderTurnCost(turn);
  }

  function renderTurnCost(turn) {
    const parts = [];
    const t = turn.tokens;
    if (t) parts.push(number(t.input) + " in · " + number(t.output) + " out · " +
      number(t.cached) + " cached tokens");
    const row = state.usage.get(turn.number);
    if (row) parts.push("$" + row.cost_usd);
    turn.costEl.textContent = parts.join(" · ");
  }

  function addEvent(event) {
    if (!event || typeof event !== "object") return;
    if (typeof event.seq === "number") {
      if (event.seq <= state.lastSeq) return; // already shown (a replay after reconnecting)
      state.lastSeq = event.seq;
    }
    const data = event.data && typeof event.data === "object" ? event.data : {};
    const wasNear = state.loaded && nearBottom();
    ui.loading.hidden = true;
    if (event.type === "user.message") newTurn(true);
    render(event, data);
    keepScrolled(wasNear);
  }

  function render(event, data) {
    switch (event.type) {
      case "user.message":
        entry("user", event, "User", textBlock(textOf(data.content)));
        if (state.loaded) refreshSoon(); // one fewer queued, perhaps
        break;
      case "agent.message":
        agentMessage(event, data);
        break;
      case "agent.tool_use":
      case "agent.mcp_tool_use":
        toolUse(event, data, "Tool call");
        break;
      case "agent.custom_tool_use":
        toolUse(event, data, "Custom tool call");
        break;
      case "agent.tool_result":
      case "agent.mcp_tool_result":
        toolResult(event, data, "Tool result");
        break;
      case "user.custom_tool_result":
        toolResult(event, data, "Custom tool result");
        break;
      case "user.tool_confirmation":
        confirmation(event, data);
        break;
      case "user.interrupt":
        line(event, "Interrupted by a user");
        break;
      case "session.status_running":
        state.waitingApproval = false;
        setStatus("running");
        line(event, "Status: running", "status");
        break;
      case "session.status_idle": {
        const reason = stopReason(data);
        if (data.stop_reason && data.stop_reason.type === "requires_action") {
          state.waitingApproval = true;
          renderStatus();
        } else {
          setStatus("idle");
          if (state.loaded) turnEnded();
        }
        line(event, "Status: idle" + (reason ? " — " + reason : ""), "status");
        break;
      }
      case "session.error": {
        const error = data.error && typeof data.error === "object" ? data.error : {};
        entry("error", event, "Runtime error",
          textBlock(String(error.message || error.type || "The runtime reported an error.")));
        break;
      }
      case "app.error":
        entry("error", event, "Error" + (data.code ? " (" + data.code + ")" : ""),
          textBlock(String(data.message || "Something went wrong.")));
        if (state.loaded) turnEnded(); // a failed turn may still have been metered
        break;
      case "app.approval_requested":
        approvalCard(event, data);
        break;
      case "app.escalation":
        entry("escalation", event, "Escalated to a human",
          textBlock(String(data.reason || "The agent asked for a human.")));
        break;
      case "app.session_archived":
        entry("status", event, "Archived" + (data.by ? " by " + data.by : ""),
          textBlock("The session is read-only from here on."));
        markArchived();
        break;
      case "span.model_request_start":
        break; // its end carries what a reader wants: the tokens
      case "span.model_request_end":
        if (state.current) addTokens(state.current, data.model_usage);
        break;
      default:
        genericLine(event, data);
    }
  }

  function genericLine(event, data) {
    const item = line(event, String(event.type || "event"), "generic");
    item.append(" ", h("details", {}, h("summary", {}, "details"), h("pre", {}, pretty(data))));
  }

  // -- usage ----------------------------------------------------------------------------------

  async function loadUsage(wantTurn) {
    if (!state.usageAvailable) return true;
    let report;
    try {
      report = await api("GET", "/usage");
    } catch (err) {
      if (err.status === 404 || err.status === 405) state.usageAvailable = false;
      return true; // tokens from the events still show; cost appears when the route answers
    }
    if (!report || !Array.isArray(report.turns)) return true;
    for (const row of report.turns) state.usage.set(Number(row.turn), row);
    for (const turn of state.turns) renderTurnCost(turn);
    if (report.total && report.total.cost_usd !== undefined) {
      ui.cost.hidden = false;
      ui.cost.textContent = "$" + report.total.cost_usd + " spent";
    }
    return !wantTurn || state.usage.has(wantTurn);
  }

  async function turnEnded() {
    // The turn's cost is recorded just after its idle event: ask again a few times.
    const turn = state.userTurns;
    for (const wait of [150, 500, 1500, 4000]) {
      await sleep(wait);
      if (state.fatal || (await loadUsage(turn))) return;
    }
  }

  // -- the live tail: SSE over fetch ----------------------------------------------------------

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        window.removeEventListener("online", done);
        state.wake = null;
        resolve();
      }
      state.wake = done;
      window.addEventListener("online", done);
    });
  }

  function dispatch(frame) {
    if (!frame.data.length) return;
    let payload;
    try {
      payload = JSON.parse(frame.data.join("\n"));
    } catch (_err) {
      return;
    }
    if (frame.event === "delta") onDelta(payload);
    else addEvent(payload);
  }

  async function readStream(response, controller) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let frame = { event: null, data: [] };
    let silence = setTimeout(() => controller.abort(), SILENCE_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(silence);
        silence = setTimeout(() => controller.abort(), SILENCE_MS);
        buffer += value;
        const lines = buffer.split(/\r?\n/);
        buffer = lines.pop();
        for (const raw of lines) {
          if (raw === "") {
            dispatch(frame);
            frame = { event: null, data: [] };
            continue;
          }
          if (raw.startsWith(":")) continue; // keep-alive comment
          const colon = raw.indexOf(":");
          const field = colon < 0 ? raw : raw.slice(0, colon);
          let value = colon < 0 ? "" : raw.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") frame.event = value;
          else if (field === "data") frame.data.push(value);
        }
      }
    } finally {
      clearTimeout(silence);
    }
  }

  async function openStream() {
    const controller = new AbortController();
    const headers = { Authorization: "Bearer " + state.token, Accept: "text/event-stream" };
    if (state.lastSeq > 0) headers["Last-Event-ID"] = String(state.lastSeq);
    const response = await fetch(base + "/stream", {
      headers, cache: "no-store", signal: controller.signal,
    });
    if (!response.ok) {
      const payload = await response.json().catch(() => null);
      throw new HttpError(response.status, payload);
    }
    const resumed = state.everLive;
    state.everLive = true;
    state.attempt = 0;
    setConnection("live", "Live");
    if (resumed) refresh(); // what changed while we were away, besides the events
    await readStream(response, controller);
  }

  async function follow() {
    while (!state.fatal) {
      try {
        await openStream();
      } catch (err) {
        if (err.status === 401) stop("signed-out", err.message);
        else if (err.status === 404) stop("not-found", err.message);
      }
      if (state.fatal) return;
      const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** state.attempt) *
        (0.75 + Math.random() * 0.5);
      state.attempt += 1;
      setConnection("lost", "Connection lost — reconnecting in " +
        Math.max(1, Math.round(delay / 1000)) + " s…");
      await pause(delay);
      if (!state.fatal) setConnection("connecting", "Connection lost — reconnecting…");
    }
  }

  function refreshSoon() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refresh, 250);
  }

  async function refresh() {
    try {
      applySession(await api("GET", ""));
    } catch (err) {
      if (err.status === 404) stop("not-found", err.message);
    }
    await loadUsage();
  }

  // -- sending messages -----------------------------------------------------------------------

  async function send(event) {
    event.preventDefault();
    if (state.fatal || state.status === "archived") return;
    const text = ui.text.value;
    if (!text.trim()) {
      setComposer(true, "Write a message first.", "error");
      ui.text.focus();
      return;
    }
    ui.send.disabled = true;
    ui.note.textContent = "Sending…";
    try {
      const answer = await api("POST", "/messages", { text });
      ui.text.value = "";
      const queued = answer.status === "running";
      state.queued = Number(answer.queued) || 0;
      state.queuedNote = queued;
      setComposer(true, queued
        ? "Queued: it is sent when the current turn ends (" + state.queued + " waiting)."
        : "Sent.");
      if (queued) setStatus("running");
      renderStatus();
    } catch (err) {
      if (err.status === 409) markArchived();
      else if (err.status !== 401) setComposer(true, "Not sent: " + err.message, "error");
    } finally {
      if (!state.fatal && state.status !== "archived") ui.send.disabled = false;
    }
    ui.text.focus();
  }

  // -- start ----------------------------------------------------------------------------------

  async function loadHistory() {
    let cursor = null;
    do {
      const query = "?limit=" + PAGE_LIMIT + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const page = await api("GET", "/events" + query);
      for (const event of page.data || []) addEvent(event);
      cursor = page.has_more ? page.next_cursor : null;
    } while (cursor);
  }

  async function start() {
    ui.form.addEventListener("submit", send);
    ui.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) ui.form.requestSubmit();
    });
    ui.reconnect.addEventListener("click", () => state.wake && state.wake());
    state.token = takeToken();
    if (!state.token) return stop("no-token");
    try {
      await loadHistory();
      applySession(await api("GET", "")); // the row's status wins over the history's last word
    } catch (err) {
      if (err.status === 404) stop("not-found", err.message);
      else if (err.status !== 401) stop("error", "Could not load the session: " + err.message);
      return;
    }
    state.loaded = true;
    ui.loading.textContent = "No messages yet: send the first one below.";
    ui.loading.hidden = state.turns.length > 0;
    ui.timeline.setAttribute("aria-busy", "false");
    window.scrollTo(0, document.documentElement.scrollHeight);
    if (state.status !== "archived") setComposer(true, "");
    loadUsage();
    setInterval(() => {
      if (!state.fatal && document.visibilityState === "visible") refresh();
    }, pollMs);
    follow();
  }

  start();
})();
