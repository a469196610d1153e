// ChatPanel's front end (anywidget ES module, no build step). Every HTML string it inserts
// comes from the kernel, rendered and sanitized there (agent_nb/notebook/render.py); model
// text never reaches a parser here. See panel.py for the messages.

const ROLES = { user: "you", assistant: "assistant", system: "system" };
// model -> the unsent prompt and whether it had the focus, kept when the view is re-made
// (each turn refreshes the output's static transcript, and JupyterLab re-makes the view)
const drafts = new WeakMap();
const focused = new WeakSet();
const editing = new WeakMap(); // model -> the id of the prompt being edited
// What each per-message button does: its label and what a screen reader says of it.
const ACTIONS = {
  copy: ["Copy", "copy this message"],
  edit: ["Edit", "edit this prompt: the conversation forks there"],
  regenerate: ["Regenerate", "answer the last prompt again; this answer is kept as a branch"],
};

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(action, label, aria) {
  const b = element("button", `agent-nb-panel-action agent-nb-panel-${action}`, label);
  b.type = "button";
  b.dataset.action = action;
  if (aria) b.setAttribute("aria-label", aria);
  return b;
}

// An item's node: {id, role, html, latest}. Its buttons carry data-action and work by event
// delegation on the log (see onAction), so nodes can be made and dropped freely.
function bubble(item, extra) {
  const known = Object.hasOwn(ROLES, item.role) ? item.role : "assistant";
  const node = element("div", `agent-nb-panel-message agent-nb-panel-${known} ${extra || ""}`);
  if (item.latest) node.classList.add("agent-nb-panel-latest");
  const head = element("div", "agent-nb-panel-head");
  head.appendChild(element("span", "agent-nb-panel-role", ROLES[known]));
  if (item.id) {
    node.dataset.id = item.id;
    const actions = element("span", "agent-nb-panel-actions");
    const mine = known === "user" ? ["copy", "edit"] : known === "assistant" ? ["copy", "regenerate"] : ["copy"];
    for (const action of mine) actions.appendChild(button(action, ...ACTIONS[action]));
    head.appendChild(actions);
  }
  node.appendChild(head);
  const body = element("div", "agent-nb-panel-body agent-nb jp-RenderedHTMLCommon jp-RenderedMarkdown");
  body.insertAdjacentHTML("beforeend", item.html);
  for (const pre of body.querySelectorAll("pre")) {
    const code = element("div", "agent-nb-panel-code");
    pre.replaceWith(code);
    const copyCode = button("copy-code", "", "copy this code");
    copyCode.dataset.label = "Copy"; // shown as CSS content: not in the message's innerText,
    code.append(copyCode, pre); // which is what Copy copies
  }
  for (const place of body.querySelectorAll(".agent-nb-panel-approval[data-call]")) {
    const tool = place.dataset.tool || "the tool";
    for (const [action, label] of [["approve", "Approve"], ["deny", "Deny"]]) {
      const b = button(action, label, `${action} the call of ${tool}`);
      b.dataset.call = place.dataset.call;
      place.appendChild(b);
    }
  }
  node.appendChild(body);
  return node;
}

// Copy `text`: the Clipboard API where the page may use it, else a selected textarea and
// execCommand; if neither works, `select` is selected for the user to copy by hand.
async function copy(text, select) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return "copied";
    }
  } catch (e) {} // not allowed here: the fallback
  const area = element("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.cssText = "position:fixed;top:0;left:0;opacity:0";
  document.body.appendChild(area);
  area.select();
  let done = false;
  try { done = document.execCommand("copy"); } catch (e) {}
  area.remove();
  if (done) return "copied";
  const range = document.createRange();
  range.selectNodeContents(select);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  return "selected: press Ctrl+C";
}

function option(value, label) {
  const o = element("option", "", label);
  o.value = value;
  return o;
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
  stop.title = "stop the answer (Escape)";
  form.append(input, send, stop, undo);
  // above the log: the session and branch switchers; below the input: the footer
  const bar = element("div", "agent-nb-panel-bar");
  const sessions = element("select", "agent-nb-panel-sessions");
  sessions.setAttribute("aria-label", "session");
  const fresh = element("button", "agent-nb-panel-new", "New session");
  fresh.title = "start a new conversation";
  const branches = element("select", "agent-nb-panel-branches");
  branches.setAttribute("aria-label", "branch");
  branches.title = "the conversation's branches (an edited prompt or a regenerated answer makes one)";
  bar.append(element("span", "agent-nb-panel-label", "session"), sessions, fresh,
    element("span", "agent-nb-panel-label", "branch"), branches);
  const banner = element("div", "agent-nb-panel-editing");
  banner.appendChild(element("span", "", "Editing an earlier prompt: Send forks the conversation there (Escape cancels) "));
  const cancel = button("cancel-edit", "Cancel", "cancel editing");
  banner.appendChild(cancel);
  const footer = element("div", "agent-nb-panel-status agent-nb-panel-footer");
  const said = element("div", "agent-nb-panel-said"); // what a copy did, for screen readers
  said.setAttribute("role", "status");
  el.append(bar, log, banner, form, footer, said);
  let lastPrompt = "";
  let latest = null; // the last answer's item: only it offers Regenerate

  let live = null; // {frozen, tail}: the answer streaming in
  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const keepDown = (was) => { if (was) log.scrollTop = log.scrollHeight; };
  const dropProvisional = () => {
    for (const e of log.querySelectorAll(".agent-nb-panel-provisional, .agent-nb-panel-note"))
      e.remove();
    live = null;
  };

  const markLatest = (items, reset) => {
    const answers = items.filter((i) => i.role === "assistant");
    if (!answers.length && !reset) return;
    if (latest) latest.latest = false;
    latest = answers.length ? answers[answers.length - 1] : null;
    if (latest) latest.latest = true;
    for (const node of log.querySelectorAll(".agent-nb-panel-latest"))
      if (!latest || node.dataset.id !== latest.id) node.classList.remove("agent-nb-panel-latest");
  };
  const showEditing = () => {
    banner.hidden = !editing.has(model);
    el.classList.toggle("agent-nb-panel-is-editing", editing.has(model));
  };
  const stopEditing = () => {
    editing.delete(model);
    showEditing();
  };
  const cancelEditing = () => {
    stopEditing();
    input.value = "";
    drafts.delete(model);
  };

  const onMessage = (msg) => {
    const down = atBottom();
    const focus = el.contains(document.activeElement); // a button of a node about to go
    if (msg.type === "reset") {
      markLatest(msg.items, true);
      if (editing.has(model) && !msg.items.some((i) => i.id === editing.get(model)))
        cancelEditing(); // the prompt being edited is not in this conversation (a switch)
      log.replaceChildren(...msg.items.map((i) => bubble(i)));
      live = null;
      if (model.get("busy")) live = startLive(""); // a view opened mid-answer
      else notes(msg);
      el.dataset.ready = "1"; // the view shows the conversation (a new view starts empty)
    } else if (msg.type === "append") {
      dropProvisional();
      markLatest(msg.items, false);
      for (const i of msg.items) log.appendChild(bubble(i));
    } else if (msg.type === "controls") {
      return controls(msg);
    } else if (msg.type === "editing") {
      editing.set(model, msg.id);
      input.value = msg.text;
      drafts.set(model, msg.text);
      showEditing();
      input.focus();
      return;
    } else if (msg.type === "card" && live) {
      const old = [...live.frozen.querySelectorAll("[data-call]")].find((e) => e.dataset.call === msg.call);
      if (old) old.insertAdjacentHTML("afterend", msg.html);
      else live.frozen.insertAdjacentHTML("beforeend", msg.html);
      if (old) old.remove();
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
    if (focus && !el.contains(document.activeElement)) input.focus(); // not lost to the page
  };

  function notes(msg) {
    if (msg.error) {
      const note = element("div", "agent-nb-panel-error agent-nb-panel-note");
      note.setAttribute("role", "alert");
      note.insertAdjacentHTML("beforeend", msg.error);
      if (msg.retry) note.appendChild(button("retry", "Retry", "try again"));
      log.appendChild(note);
    }
  }

  function controls(msg) {
    sessions.replaceChildren(...msg.sessions.map((s) => option(s.id, s.title ? `${s.title} (${s.id})` : s.id)));
    sessions.value = msg.current;
    branches.replaceChildren(...msg.branches.map((b) =>
      option(b.id, `${b.id} · ${b.count} messages${b.title ? " · " + b.title : ""}`)));
    branches.value = msg.current;
    branches.disabled = msg.branches.length < 2 || model.get("busy");
    footer.replaceChildren();
    footer.insertAdjacentHTML("beforeend", msg.footer);
    lastPrompt = msg.last_prompt;
  }

  function startLive(userHtml) {
    if (userHtml) log.appendChild(bubble({ role: "user", html: userHtml }, "agent-nb-panel-provisional"));
    const answer = bubble({ role: "assistant", html: "" }, "agent-nb-panel-provisional agent-nb-panel-live");
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
    if (editing.has(model)) model.send({ type: "send", text, edit: editing.get(model) });
    else model.send({ type: "send", text });
    input.value = "";
    drafts.delete(model);
    stopEditing();
  };
  const onKey = (event) => {
    if (event.key === "ArrowUp" && !input.value && lastPrompt && !event.isComposing) {
      event.preventDefault(); // ↑ in an empty input: the last prompt, to send again or change
      input.value = lastPrompt;
      input.setSelectionRange(input.value.length, input.value.length);
      return onInput();
    }
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
  const onEscape = (event) => {
    if (event.key !== "Escape") return;
    if (editing.has(model)) cancelEditing();
    else if (model.get("busy")) onStop();
    else return; // JupyterLab's: leave the cell
    event.preventDefault();
    event.stopPropagation();
  };
  const announce = (text) => { said.textContent = text; };
  const onAction = async (event) => {
    const target = event.target.closest && event.target.closest("button[data-action]");
    if (!target || !log.contains(target)) return;
    const action = target.dataset.action;
    const node = target.closest("[data-id]");
    const id = node ? node.dataset.id : null;
    if (action === "copy" || action === "copy-code") {
      const source = action === "copy" ? node.querySelector(".agent-nb-panel-body") : target.parentElement.querySelector("pre");
      const result = await copy(source.innerText, source);
      const label = result === "copied" ? "Copied" : "Press Ctrl+C";
      target.dataset.copied = result; // the button says so, for a moment
      if (action === "copy") target.textContent = label;
      else target.dataset.label = label;
      announce(result);
      setTimeout(() => {
        delete target.dataset.copied;
        if (action === "copy") target.textContent = ACTIONS.copy[0];
        else target.dataset.label = "Copy";
      }, 2000);
    } else if (action === "edit" || action === "regenerate") {
      if (!model.get("busy")) model.send({ type: action, id });
    } else if (action === "approve" || action === "deny") {
      if (model.get("busy")) return;
      for (const b of target.parentElement.querySelectorAll("button")) b.disabled = true;
      model.send({ type: action, call: target.dataset.call, id }); // id: the call's message
    } else if (action === "retry") {
      target.disabled = true;
      model.send({ type: "retry" });
    }
  };
  const onSwitch = (event) => {
    if (event.target.value) model.send({ type: "switch", session: event.target.value });
  };
  const onNew = () => model.send({ type: "new" });
  const onCancel = () => {
    cancelEditing();
    input.focus();
  };
  const onBusy = () => {
    const busy = model.get("busy");
    send.disabled = busy;
    stop.disabled = !busy;
    undo.disabled = busy;
    sessions.disabled = fresh.disabled = busy;
    branches.disabled = busy || branches.options.length < 2;
    el.classList.toggle("agent-nb-panel-busy", busy);
  };
  input.addEventListener("keydown", onKey);
  input.addEventListener("input", onInput);
  el.addEventListener("keydown", onEscape);
  log.addEventListener("click", onAction);
  send.addEventListener("click", submit);
  stop.addEventListener("click", onStop);
  undo.addEventListener("click", onUndo);
  sessions.addEventListener("change", onSwitch);
  branches.addEventListener("change", onSwitch);
  fresh.addEventListener("click", onNew);
  cancel.addEventListener("click", onCancel);
  showEditing();
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
