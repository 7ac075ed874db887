/* Axi's web chat: log in with a token, read the conversation, write to Axi and watch the
   reply being written.

   Talks only to the token API of the same origin, with relative URLs ("api/…"), so the
   page works behind the Cloudflare tunnel and under any path prefix. Every text from the
   server is inserted with textContent, never as HTML. No library, no build step. */
"use strict";

(function () {
  const TOKEN_KEY = "axi.jeton";
  const PAGE_SIZE = 30;
  const POLL_MS = 3000;
  const THINKING = "Axi réfléchit…";

  const $ = (id) => document.getElementById(id);
  const ui = {
    who: $("who"),
    logout: $("logout"),
    loginView: $("login-view"),
    loginForm: $("login-form"),
    token: $("token"),
    showToken: $("show-token"),
    loginButton: $("login-button"),
    loginError: $("login-error"),
    chatView: $("chat-view"),
    log: $("log"),
    older: $("older"),
    messages: $("messages"),
    composer: $("composer"),
    status: $("status"),
    statusDetail: $("status-detail"),
    chatError: $("chat-error"),
    message: $("message"),
    local: $("local"),
    send: $("send"),
  };

  let token = null; // the token of the session shown (null: logged out)
  let session = 0; // bumped at each login and logout: late answers of an old one are dropped
  let nextBefore = null;
  let loadingOlder = false;
  let sending = false;
  let historyRead = Promise.resolve(); // the first page of history, awaited before sending
  const open = new Set(); // turns waiting for Axi's reply
  const shownIds = new Set(); // ids of the messages on screen

  // ------------------------------------------------------------------ storage
  function storedToken() {
    try { return window.localStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function storeToken(value) {
    try {
      if (value) window.localStorage.setItem(TOKEN_KEY, value);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* private browsing: the session lasts as long as the page */ }
  }

  // ------------------------------------------------------------------ HTTP
  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  function retrySeconds(response) {
    const value = response.headers.get("Retry-After");
    const seconds = value === null ? NaN : parseInt(value, 10);
    return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
  }

  async function errorOf(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    const said = body && typeof body.message === "string" ? body.message : "";
    const code = body && typeof body.error === "string" ? body.error : "";
    const status = response.status;
    const wait = retrySeconds(response);
    let text;
    if (status === 401) {
      text = "Jeton refusé. " + (said || "Vérifiez-le ou demandez-en un nouveau à Anthony.");
    } else if (status === 403) {
      text = said || "Ce jeton ne permet pas d'utiliser la discussion.";
    } else if (status === 413) {
      text = "Message trop long : raccourcissez-le. " + said;
    } else if (status === 429) {
      text = "Trop de demandes, réessayez dans " + (wait || 60) + " s.";
    } else if (said) {
      text = said;
    } else {
      text = "Axi a rencontré un problème (erreur " + status + "). Réessayez dans un instant.";
    }
    return new ApiError(status, code, text.trim(), wait);
  }

  async function call(path, options, withToken) {
    const opts = options || {};
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    headers.Authorization = "Bearer " + (withToken || token);
    let response;
    try {
      response = await fetch(path, {
        method: opts.method || "GET",
        headers: headers,
        body: opts.body,
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      throw new ApiError(0, "reseau",
        "Impossible de joindre Axi. Vérifiez votre connexion puis réessayez.", null);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async function json(response) {
    try { return await response.json(); } catch (e) {
      throw new ApiError(response.status, "reponse_illisible",
        "La réponse d'Axi est illisible. Réessayez dans un instant.", null);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ------------------------------------------------------------------ views
  function showError(el, text) {
    el.textContent = text || "";
    el.hidden = !text;
  }

  function showLogin(message) {
    ui.chatView.hidden = true;
    ui.logout.hidden = true;
    ui.who.hidden = true;
    ui.loginView.hidden = false;
    showError(ui.loginError, message);
    ui.token.focus();
  }

  function showChat(me) {
    ui.loginView.hidden = true;
    ui.chatView.hidden = false;
    ui.logout.hidden = false;
    ui.who.textContent = me && me.name ? me.name : "";
    ui.who.hidden = !ui.who.textContent;
    showError(ui.chatError, "");
    ui.message.focus();
  }

  function logout(message) {
    session += 1;
    token = null;
    storeToken(null);
    open.clear();
    updateStatus();
    ui.messages.replaceChildren();
    shownIds.clear();
    nextBefore = null;
    ui.older.hidden = true;
    ui.token.value = "";
    showLogin(message);
  }

  function failed(err) {
    if (err instanceof ApiError && err.status === 401) {
      logout(err.message);
      return;
    }
    showError(ui.chatError, err instanceof ApiError ? err.message
      : "Une erreur inattendue est survenue dans la page. Rechargez-la.");
  }

  // ------------------------------------------------------------------ messages
  const timeFormat = new Intl.DateTimeFormat("fr-FR", { hour: "2-digit", minute: "2-digit" });
  const dateFormat = new Intl.DateTimeFormat("fr-FR",
    { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

  function when(at) {
    const date = at ? new Date(at) : new Date();
    if (Number.isNaN(date.getTime())) return "";
    const today = new Date().toDateString() === date.toDateString();
    return (today ? timeFormat : dateFormat).format(date);
  }

  function nearBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }
  function toBottom() { ui.log.scrollTop = ui.log.scrollHeight; }

  // kind: "mine" (Ludo), "axi", "notice"
  function bubble(kind, text, at, extra) {
    const li = document.createElement("li");
    li.className = "msg " + kind;
    const meta = document.createElement("p");
    meta.className = "meta";
    const who = kind === "mine" ? "Vous" : kind === "axi" ? "Axi" : "Info d'Axi";
    meta.textContent = [who, when(at), extra].filter(Boolean).join(" · ");
    if (kind === "empty") meta.hidden = true;
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text || "";
    li.append(meta, body);
    return li;
  }

  function fromHistory(m) {
    const kind = m.kind === "notice" ? "notice" : m.direction === "in" ? "mine" : "axi";
    const li = bubble(kind, m.text, m.at);
    li.dataset.id = String(m.id);
    return li;
  }

  function dropEmptyNote() {
    const empty = ui.messages.querySelector(".msg.empty");
    if (empty) empty.remove();
  }

  function append(li) {
    const stick = nearBottom();
    dropEmptyNote();
    ui.messages.append(li);
    if (stick) toBottom();
  }

  async function loadHistory(older) {
    const mine = session;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (older) params.set("before", String(nextBefore));
    const data = await json(await call("api/history?" + params.toString()));
    if (mine !== session) return;
    const items = (Array.isArray(data.messages) ? data.messages : [])
      .filter((m) => !shownIds.has(m.id)).reverse(); // oldest first
    const nodes = items.map((m) => { shownIds.add(m.id); return fromHistory(m); });
    if (older) {
      const before = ui.log.scrollHeight;
      ui.messages.prepend(...nodes);
      ui.log.scrollTop += ui.log.scrollHeight - before;
    } else {
      ui.messages.prepend(...nodes); // before anything sent meanwhile
      if (!ui.messages.children.length) {
        ui.messages.append(bubble("empty", "Aucun message pour l'instant. Écrivez à Axi ci-dessous."));
      }
      toBottom();
    }
    nextBefore = data.next_before === undefined || data.next_before === null ? null : data.next_before;
    ui.older.hidden = nextBefore === null;
  }

  async function loadOlder() {
    if (loadingOlder || nextBefore === null || token === null) return;
    loadingOlder = true;
    ui.older.disabled = true;
    ui.older.textContent = "Chargement…";
    try {
      await loadHistory(true);
    } catch (err) {
      failed(err);
    } finally {
      loadingOlder = false;
      ui.older.disabled = false;
      ui.older.textContent = "Messages plus anciens";
    }
  }

  // ------------------------------------------------------------------ login
  async function login(candidate, remembered) {
    const mine = ++session;
    ui.loginButton.disabled = true;
    ui.loginButton.textContent = "Connexion…";
    showError(ui.loginError, "");
    try {
      const me = await json(await call("api/me", {}, candidate));
      if (mine !== session) return;
      token = candidate;
      storeToken(candidate);
      ui.messages.replaceChildren();
      shownIds.clear();
      showChat(me);
      historyRead = loadHistory(false);
      await historyRead;
    } catch (err) {
      if (mine !== session) return;
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        logout(err.message); // a token that cannot chat is forgotten
      } else if (token !== null) {
        failed(err); // logged in, but the history could not be read: say so in the chat
      } else {
        // Axi unreachable: keep the remembered token, a click on "Se connecter" retries
        if (remembered) ui.token.value = candidate;
        showLogin(err instanceof ApiError ? err.message : String(err));
      }
    } finally {
      ui.loginButton.disabled = false;
      ui.loginButton.textContent = "Se connecter";
    }
  }

  // ------------------------------------------------------------------ sending
  function updateStatus() {
    if (!open.size) {
      ui.status.hidden = true;
      ui.statusDetail.textContent = "";
      return;
    }
    let detail = "";
    for (const turn of open) if (turn.notice) detail = turn.notice;
    ui.statusDetail.textContent = detail;
    ui.status.hidden = false;
  }

  function addNotice(turn, text) {
    if (!text || turn.notices.has(text)) return;
    turn.notices.add(text);
    turn.notice = text;
    const li = bubble("notice", text);
    turn.reply.before(li);
    if (nearBottom()) toBottom();
    updateStatus();
  }

  function close(turn) {
    open.delete(turn);
    turn.reply.classList.remove("writing");
    turn.reply.dataset.state = "done";
    turn.reply.removeAttribute("aria-busy");
    updateStatus();
  }

  function finish(turn, data) {
    if (turn.done) return;
    turn.done = true;
    const stick = nearBottom();
    const notices = Array.isArray(data.notices) ? data.notices : [];
    for (const n of notices) addNotice(turn, typeof n === "string" ? n : n && n.text);
    if (typeof data.reply === "string") {
      turn.text = data.reply;
      turn.body.textContent = data.reply;
      turn.meta.textContent = "Axi · " + when();
      if (data.reply_id !== undefined && data.reply_id !== null) {
        turn.reply.dataset.id = String(data.reply_id);
        shownIds.add(data.reply_id);
      }
    } else if (!turn.text) {
      turn.reply.remove();
      if (!notices.length) addNoticeAfter(turn, "Axi n'a pas répondu à ce message.");
    }
    close(turn);
    if (stick) toBottom();
  }

  function addNoticeAfter(turn, text) {
    turn.mine.after(bubble("notice", text));
  }

  function accepted(turn, id) {
    if (id === undefined || id === null) return;
    turn.messageId = id;
    turn.mine.dataset.id = String(id);
    shownIds.add(id);
  }

  function onEvent(turn, name, data) {
    if (name === "accepted") {
      accepted(turn, data.message_id);
    } else if (name === "notice") {
      addNotice(turn, data.text);
    } else if (name === "chunk") {
      if (typeof data.text !== "string") return;
      const stick = nearBottom();
      turn.text += data.text;
      turn.body.textContent = turn.text;
      turn.chunks += 1;
      turn.reply.dataset.chunks = String(turn.chunks);
      if (stick) toBottom();
    } else if (name === "restart") {
      // the reply starts over (a retry after a failure mid-stream): forget what was shown
      turn.text = "";
      turn.body.textContent = "";
    } else if (name === "reply") {
      accepted(turn, data.message_id);
      finish(turn, data);
    } else if (name === "pending") {
      accepted(turn, data.message_id); // the stream gave up waiting: poll() takes over
    } else if (name === "error") {
      throw new ApiError(data.status || 500, data.error || "erreur",
        data.message || "Axi a rencontré un problème. Réessayez dans un instant.", null);
    }
  }

  // Server-Sent Events over fetch (EventSource can neither POST nor send a token).
  async function readEvents(response, turn) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let name = "";
    let data = [];
    const dispatch = () => {
      if (data.length) {
        let value = null;
        try { value = JSON.parse(data.join("\n")); } catch (e) { value = null; }
        if (value !== null && typeof value === "object") onEvent(turn, name || "message", value);
      }
      name = "";
      data = [];
    };
    const line = (text) => {
      if (text.endsWith("\r")) text = text.slice(0, -1);
      if (text === "") { dispatch(); return; }
      if (text.startsWith(":")) return; // a keep-alive comment
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let val = colon < 0 ? "" : text.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") name = val;
      else if (field === "data") data.push(val);
    };
    for (;;) {
      let value, done;
      try {
        ({ value, done } = await reader.read());
      } catch (e) {
        throw new ApiError(0, "coupure", "La connexion avec Axi a été coupée. Réessayez.", null);
      }
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        line(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
      }
      if (done) break;
    }
    if (buffer) line(buffer);
    dispatch(); // a last event the server did not end with a blank line
  }

  async function poll(turn, mine) {
    turn.notice = turn.notice || "La réponse prend du temps : elle s'affichera ici dès qu'elle sera prête.";
    turn.reply.dataset.state = "polling";
    updateStatus();
    while (!turn.done && mine === session) {
      await sleep(POLL_MS);
      if (mine !== session) return;
      let data;
      try {
        data = await json(await call("api/messages/" + encodeURIComponent(String(turn.messageId))));
      } catch (err) {
        if (mine !== session) return;
        if (err instanceof ApiError && err.status === 401) { failed(err); return; }
        if (err instanceof ApiError && err.status === 429 && err.retryAfter) {
          await sleep(err.retryAfter * 1000);
        }
        continue; // unreachable for a moment: keep waiting for the reply
      }
      if (mine !== session) return;
      const notices = Array.isArray(data.notices) ? data.notices : [];
      for (const n of notices) addNotice(turn, typeof n === "string" ? n : n && n.text);
      if (data.reply !== null && data.reply !== undefined) { finish(turn, data); return; }
      if (data.state && data.state !== "en_attente") { finish(turn, data); return; }
    }
  }

  async function send() {
    const text = ui.message.value.trim();
    if (!text || sending || token === null) return;
    const mine = session;
    const localOnly = ui.local.checked;
    sending = true;
    ui.send.disabled = true;
    showError(ui.chatError, "");
    try { await historyRead; } catch (e) { /* said already; sending may still work */ }
    if (mine !== session) { sending = false; ui.send.disabled = false; return; }
    const turn = {
      mine: bubble("mine", text, null, localOnly ? "local" : ""),
      reply: bubble("axi", ""),
      text: "", chunks: 0, notices: new Set(), notice: "", messageId: null,
      done: false,
    };
    turn.meta = turn.reply.querySelector(".meta");
    turn.body = turn.reply.querySelector(".text");
    turn.meta.textContent = THINKING;
    turn.reply.classList.add("writing");
    turn.reply.dataset.state = "streaming";
    turn.reply.setAttribute("aria-busy", "true"); // read out once written, not per chunk
    append(turn.mine);
    append(turn.reply);
    toBottom();
    ui.message.value = "";
    resize();
    open.add(turn);
    updateStatus();
    try {
      const response = await call("api/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ message: text, local_only: localOnly }),
      });
      const type = response.headers.get("Content-Type") || "";
      if (type.includes("text/event-stream") && response.body) {
        await readEvents(response, turn);
      } else {
        const data = await json(response);
        accepted(turn, data.message_id);
        if (response.status !== 202 && typeof data.reply === "string") finish(turn, data);
      }
      if (!turn.done && turn.messageId !== null) {
        poll(turn, mine); // in the background: another message may be sent meanwhile
      } else if (!turn.done) {
        throw new ApiError(0, "coupure",
          "La connexion avec Axi a été coupée avant qu'il confirme votre message. Réessayez.", null);
      }
    } catch (err) {
      if (mine !== session) return;
      if (turn.messageId !== null && !(err instanceof ApiError && err.status === 401)) {
        // the message is stored: its reply will come, look for it
        showError(ui.chatError, "La connexion a été coupée ; la réponse d'Axi s'affichera dès qu'elle sera prête.");
        poll(turn, mine);
      } else {
        // not sent: give the text back so nothing typed is lost
        turn.done = true;
        close(turn);
        turn.reply.remove();
        turn.mine.classList.add("failed");
        turn.mine.querySelector(".meta").textContent = "Vous · non envoyé";
        if (!ui.message.value) { ui.message.value = text; resize(); }
        failed(err);
      }
    } finally {
      sending = false;
      ui.send.disabled = false;
    }
  }

  // ------------------------------------------------------------------ wiring
  function resize() {
    ui.message.style.height = "auto";
    ui.message.style.height = Math.min(ui.message.scrollHeight + 4, window.innerHeight * 0.4) + "px";
  }

  ui.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = ui.token.value.trim();
    if (!value) { showError(ui.loginError, "Saisissez votre jeton d'accès."); ui.token.focus(); return; }
    login(value, false);
  });
  ui.showToken.addEventListener("change", () => {
    ui.token.type = ui.showToken.checked ? "text" : "password";
  });
  ui.logout.addEventListener("click", () => logout("Vous êtes déconnecté. Le jeton a été effacé de ce navigateur."));
  ui.older.addEventListener("click", loadOlder);
  ui.log.addEventListener("scroll", () => { if (ui.log.scrollTop < 40) loadOlder(); }, { passive: true });
  ui.composer.addEventListener("submit", (event) => { event.preventDefault(); send(); });
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.message.addEventListener("input", resize);

  const remembered = storedToken();
  if (remembered) login(remembered, true);
  else showLogin("");
})();
