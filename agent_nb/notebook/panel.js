// ChatPanel's front end (anywidget ES module, no build step). Every HTML string it inserts
// comes from the kernel, rendered and sanitized there (agent_nb/notebook/render.py); model
// text never reaches a parser here. See panel.py for the messages.

const ROLES = { user: "you", assistant: "assistant", system: "system" };
// model -> the unsent prompt and whether it had the focus, kept when the view is re-made
// (each turn refreshes the output's static transcript, and JupyterLab re-makes the view)
const drafts = new WeakMap();
const focused = new WeakSet();

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bubble(role, html, extra) {
  const known = Object.hasOwn(ROLES, role) ? role : "assistant";
  const item = element("div", `agent-nb-panel-message agent-nb-panel-${known} ${extra || ""}`);
  item.appendChild(element("div", "agent-nb-panel-role", ROLES[known]));
  const body = element("div", "agent-nb-panel-body agent-nb jp-RenderedHTMLCommon jp-RenderedMarkdown");
  body.insertAdjacentHTML("beforeend", html);
  item.appendChild(body);
  return item;
}

// The panel's transcript (the output after the widget's, for a notebook shown with no kernel)
// is hidden while a view of the panel is live: one style rule per panel, kept while any of its
// views is. (JupyterLab, Notebook 7 and VS Code show every output in one document.)
const hiding = new Map(); // fallback id -> {views, style}

function hideFallback(id) {
  if (!/^[0-9a-f]+$/.test(id || "")) return () => {};
  let entry = hiding.get(id);
  if (!entry) {
    const style = document.createElement("style");
    const marked = `[data-agent-nb-fallback="${id}"]`;
    style.textContent = `.jp-OutputArea-child:has(${marked}), ${marked} { display: none !important; }`;
    document.head.appendChild(style);
    entry = { views: 0, style };
    hiding.set(id, entry);
  }
  entry.views += 1;
  return () => {
    entry.views -= 1;
    if (entry.views === 0) {
      entry.style.remove();
      hiding.delete(id);
    }
  };
}

function render({ model, el }) {
  el.classList.add("agent-nb-panel");
  const showFallback = hideFallback(model.get("_fallback_id"));
  const log = element("div", "agent-nb-panel-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  const form = element("div", "agent-nb-panel-input");
  const input = element("textarea", "agent-nb-panel-prompt");
  input.rows = 2;
  input.placeholder = "Message (Enter sends, Shift+Enter: new line)";
  input.setAttribute("aria-label", "message");
  input.dataset.lmSuppressShortcuts = "true"; // Enter is ours, not JupyterLab's
  input.value = drafts.get(model) || "";
  const send = element("button", "agent-nb-panel-send", "Send");
  const stop = element("button", "agent-nb-panel-stop", "Stop");
  const undo = element("button", "agent-nb-panel-undo", "Undo");
  undo.title = "drop the last turn from the session";
  form.append(input, send, stop, undo);
  el.append(log, form);

  let live = null; // {frozen, tail}: the answer streaming in
  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const keepDown = (was) => { if (was) log.scrollTop = log.scrollHeight; };
  const dropProvisional = () => {
    for (const e of log.querySelectorAll(".agent-nb-panel-provisional, .agent-nb-panel-note"))
      e.remove();
    live = null;
  };

  const onMessage = (msg) => {
    const down = atBottom();
    if (msg.type === "reset") {
      log.replaceChildren(...msg.items.map((i) => bubble(i.role, i.html)));
      live = null;
      if (model.get("busy")) live = startLive(""); // a view opened mid-answer
      else notes(msg);
    } else if (msg.type === "append") {
      dropProvisional();
      for (const i of msg.items) log.appendChild(bubble(i.role, i.html));
    } else if (msg.type === "start") {
      dropProvisional();
      live = startLive(msg.user);
    } else if (msg.type === "delta" && live) {
      if (msg.done) live.frozen.insertAdjacentHTML("beforeend", msg.done);
      if (msg.tail !== null && msg.tail !== undefined) {
        live.tail.replaceChildren();
        live.tail.insertAdjacentHTML("beforeend", msg.tail);
      }
    } else if (msg.type === "end") {
      notes(msg);
    }
    keepDown(down || msg.type === "start");
  };

  function notes(msg) {
    if (msg.footer) {
      const note = element("div", "agent-nb-panel-footer agent-nb-panel-note agent-nb jp-RenderedHTMLCommon");
      note.insertAdjacentHTML("beforeend", msg.footer);
      log.appendChild(note);
    }
    if (msg.error) {
      const note = element("div", "agent-nb-panel-error agent-nb-panel-note");
      note.setAttribute("role", "alert");
      note.insertAdjacentHTML("beforeend", msg.error);
      log.appendChild(note);
    }
  }

  function startLive(userHtml) {
    if (userHtml) log.appendChild(bubble("user", userHtml, "agent-nb-panel-provisional"));
    const answer = bubble("assistant", "", "agent-nb-panel-provisional agent-nb-panel-live");
    const body = answer.querySelector(".agent-nb-panel-body");
    const frozen = element("div", "agent-nb-panel-frozen");
    const tail = element("div", "agent-nb-panel-tail");
    body.append(frozen, tail);
    log.appendChild(answer);
    return { frozen, tail };
  }

  const submit = () => {
    const text = input.value;
    if (!text.trim() || model.get("busy")) return;
    model.send({ type: "send", text });
    input.value = "";
    drafts.delete(model);
  };
  const onKey = (event) => {
    if (event.key !== "Enter" || event.isComposing) return;
    event.preventDefault(); // the notebook around us would take Shift+Enter as "run cell"
    event.stopPropagation();
    if (!event.shiftKey) return submit();
    input.setRangeText("\n", input.selectionStart, input.selectionEnd, "end");
    onInput();
  };
  const onInput = () => drafts.set(model, input.value);
  const onStop = () => model.send({ type: "stop" });
  const onUndo = () => model.send({ type: "undo" });
  const onBusy = () => {
    const busy = model.get("busy");
    send.disabled = busy;
    stop.disabled = !busy;
    undo.disabled = busy;
    el.classList.toggle("agent-nb-panel-busy", busy);
  };
  input.addEventListener("keydown", onKey);
  input.addEventListener("input", onInput);
  send.addEventListener("click", submit);
  stop.addEventListener("click", onStop);
  undo.addEventListener("click", onUndo);
  model.on("msg:custom", onMessage);
  model.on("change:busy", onBusy);
  onBusy();
  model.send({ type: "hello" });
  if (focused.has(model)) {
    focused.delete(model);
    requestAnimationFrame(() => input.focus());
  }
  return () => {
    showFallback();
    if (document.activeElement === input) focused.add(model);
    model.off("msg:custom", onMessage);
    model.off("change:busy", onBusy);
  };
}

export default { render };
