// ChatPanel's front end (anywidget ES module, no build step). Every HTML string it inserts
// comes from the kernel, rendered and sanitized there (agent_nb/_render.py); model
// text never reaches a parser here. See panel.py for the messages.

const ROLES = { user: "you", assistant: "assistant", system: "system" };
// panel -> the unsent prompt, whether it had the focus, the id of the prompt being edited:
// kept when the view is re-made. Keyed by the panel's own id (its `_fallback_id`), not by
// the model: anywidget gives each view a model object of its own.
const drafts = new Map();
const focused = new Set();
const editing = new Map();
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

// ---- MessageList (the log as a virtual list) ----------------------------------------------
// Only the messages in view, plus a screen above and below, are nodes; the rest are their
// HTML strings and a height (measured when they were last shown, else estimated from their
// length), stood in for by two spacers. The visible part stays still when heights change
// (an anchor: the first message in view keeps its place on screen); while the view is at the
// bottom it stays there (new messages, the answer streaming in `after`). Trade-offs: the
// browser's find-in-page sees only the rendered messages (the saved transcript and
// `%session history` have them all); screen readers get a feed (role=feed, each message an
// article with aria-posinset/aria-setsize), and only `after` (the answer streaming, the
// turn's notes) is a live region, so messages rendered by scrolling are not announced.

const MARGIN = 1; // screens of messages rendered above and below the visible part
const NEAR = 24; // px from the bottom that still count as "at the bottom"
const BASE = 40, PER_CHAR = 0.05; // px: a height estimate before anything was measured
// session id -> {heights: Map id -> px, anchor: {id, delta} | null, stuck}: a re-made view
// (each turn refreshes the output's transcript, and JupyterLab re-makes the view) opens as
// it was. By session, not by model: anywidget hands each view a model of its own (a proxy).
const layouts = new Map();
const LAYOUTS = 16; // sessions remembered

function layoutOf(key) {
  let layout = layouts.get(key);
  if (layout) layouts.delete(key); // (and set again: the newest last)
  else layout = { heights: new Map(), anchor: null, stuck: true };
  layouts.set(key, layout);
  for (const old of layouts.keys()) {
    if (layouts.size <= LAYOUTS) break;
    layouts.delete(old);
  }
  return layout;
}

class MessageList {
  // makeNode(item): an item's node; key(): the session shown (whose layout to remember)
  constructor(log, makeNode, key) {
    this.log = log;
    this.makeNode = makeNode;
    this.key = key;
    this.memory = layoutOf(key());
    this.stuck = this.memory.stuck;
    this.items = [];
    this.heights = []; // px per item; undefined: not measured (estimated)
    this.offsets = [0]; // offsets[i]: top of item i in the list (gaps included)
    this.nodes = new Map(); // index -> node, for the rendered range first..last
    this.first = 0;
    this.last = -1;
    this.measured = { count: 0, px: 0, chars: 0 };
    this.box = element("div", "agent-nb-panel-list");
    this.box.setAttribute("role", "feed");
    this.box.setAttribute("aria-label", "conversation");
    this.above = element("div", "agent-nb-panel-spacer");
    this.below = element("div", "agent-nb-panel-spacer");
    this.box.append(this.above, this.below);
    this.after = element("div", "agent-nb-panel-after"); // the live answer and the notes
    this.after.setAttribute("role", "log");
    this.after.setAttribute("aria-live", "polite");
    log.tabIndex = 0; // the keyboard scrolls it (Page Up/Down, Home, End)
    log.append(this.box, this.after);
    this.updating = false;
    this.placed = null; // the scrollTop we set last: its scroll event is not the user's
    this.onScroll = () => {
      if (Math.abs(log.scrollTop - this.placed) >= 1) this.stuck = this.atBottom();
      this.update();
    };
    log.addEventListener("scroll", this.onScroll, { passive: true });
    // a message changing height (a tool card opened, a new width) changes the list's
    this.resized = new ResizeObserver(() => this.update());
    for (const e of [log, this.box, this.after]) this.resized.observe(e);
  }

  reset(items) {
    this.memory = layoutOf(this.key());
    for (const node of this.nodes.values()) node.remove();
    this.nodes.clear();
    this.first = 0;
    this.last = -1;
    this.items = [];
    this.heights = [];
    this.measured = { count: 0, px: 0, chars: 0 };
    const known = this.memory.heights;
    const ids = new Set(items.map((i) => i.id));
    for (const id of known.keys()) if (!ids.has(id)) known.delete(id);
    const anchor = this.memory.anchor;
    this.pending = anchor && !this.memory.stuck ? anchor : null;
    this.stuck = !this.pending;
    this.append(items);
  }

  append(items) {
    for (const item of items) {
      this.items.push(item);
      const known = this.memory.heights.get(item.id);
      this.heights.push(known);
      if (known !== undefined) this.learn(known, item);
    }
    for (const [index, node] of this.nodes) this.label(node, index);
    this.update();
  }

  // A scroll the reader made whose event has not come yet (it comes with the next frame):
  // taken in before a message changes the log, else update() would put the view back at
  // the bottom (an answer's next tokens undid a scroll up). Only then can scrollTop differ
  // from where place() left it, as onScroll knows: the reader, or a shorter log (clamped,
  // so at the bottom).
  noticeScroll() {
    const log = this.log;
    if (this.placed === null || !log.isConnected || log.clientWidth === 0) return;
    if (Math.abs(log.scrollTop - this.placed) >= 1) this.stuck = this.atBottom();
  }

  // Scroll to the bottom and stay there (a prompt was sent).
  stick() {
    this.stuck = true;
    this.update();
  }

  destroy() {
    this.resized.disconnect();
    this.log.removeEventListener("scroll", this.onScroll);
  }

  // -- layout ---------------------------------------------------------------------------

  atBottom() {
    const log = this.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR;
  }

  learn(px, item) {
    this.measured.count += 1;
    this.measured.px += px;
    this.measured.chars += item.html.length;
  }

  height(index) {
    const known = this.heights[index];
    if (known !== undefined) return known;
    const { count, px, chars } = this.measured;
    const perChar = count && chars ? Math.max(0, (px - BASE * count) / chars) : PER_CHAR;
    return BASE + perChar * this.items[index].html.length;
  }

  layout() {
    const gap = this.gap;
    const offsets = new Array(this.items.length + 1);
    offsets[0] = 0;
    for (let i = 0; i < this.items.length; i++) offsets[i + 1] = offsets[i] + this.height(i) + gap;
    this.offsets = offsets;
  }

  // The index of the item at `y` (list coordinates), clamped to the list.
  at(y) {
    const offsets = this.offsets;
    let lo = 0, hi = this.items.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (offsets[mid] <= y) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  // The item that holds still: the first in view that the reader has seen (it has a node;
  // else the first in view), and how far below the view's top it starts.
  anchor() {
    const top = this.log.scrollTop - this.box.offsetTop;
    const first = this.at(Math.max(0, top));
    let index = first;
    const end = Math.min(this.last, this.items.length - 1);
    while (index <= end && !this.nodes.has(index) && this.offsets[index] < top + this.log.clientHeight)
      index++;
    if (!this.nodes.has(index)) index = first;
    return { index, delta: this.offsets[index] - top };
  }

  update() {
    const log = this.log;
    if (this.updating) return;
    if (!log.isConnected || log.clientWidth === 0) { // not laid out (hidden: a tab away)
      this.placed = null; // its scrollTop may be lost meanwhile: not the reader's scroll
      return;
    }
    this.updating = true;
    try {
      this.gap = parseFloat(getComputedStyle(this.box).rowGap) || 0;
      this.layout();
      this.space();
      let anchor = null;
      if (this.pending) {
        const index = this.items.findIndex((i) => i.id === this.pending.id);
        if (index >= 0) anchor = { index, delta: this.pending.delta };
        else this.stuck = true;
        this.pending = null;
      } else if (!this.stuck && this.items.length) {
        anchor = this.anchor();
      }
      for (let pass = 0; pass < 4; pass++) {
        const changed = this.measure();
        const moved = this.render(this.range(anchor));
        const grown = this.measure();
        this.place(anchor);
        if (!changed && !moved && !grown) break;
      }
      this.remember();
    } finally {
      this.updating = false;
    }
  }

  // The items to render: the visible ones (where the view will be) and a margin.
  range(anchor) {
    const n = this.items.length;
    if (!n) return [0, -1];
    const view = this.log.clientHeight;
    let top;
    if (anchor) top = this.offsets[anchor.index] - anchor.delta;
    else if (this.stuck) top = this.offsets[n] + this.after.offsetHeight - view;
    else top = this.log.scrollTop - this.box.offsetTop;
    const margin = view * MARGIN;
    return [this.at(Math.max(0, top - margin)), this.at(Math.max(0, top + view + margin))];
  }

  // Make the nodes of first..last, drop the others; true if the range changed.
  render([first, last]) {
    if (first === this.first && last === this.last) return false;
    for (const [index, node] of this.nodes) {
      if (index >= first && index <= last) continue;
      if (node.contains(document.activeElement)) this.log.focus({ preventScroll: true });
      node.remove();
      this.nodes.delete(index);
    }
    const make = (from, to) => {
      const made = document.createDocumentFragment();
      for (let i = from; i <= to; i++) {
        if (this.nodes.has(i)) continue;
        const node = this.makeNode(this.items[i]);
        if (this.items[i].id && !node.dataset.id) node.dataset.id = this.items[i].id;
        node.setAttribute("role", "article");
        this.label(node, i);
        this.nodes.set(i, node);
        made.appendChild(node);
      }
      return made;
    };
    const overlap = this.last >= this.first && first <= this.last && last >= this.first;
    if (overlap) {
      this.above.after(make(first, this.first - 1));
      this.below.before(make(this.last + 1, last));
    } else {
      this.below.before(make(first, last));
    }
    this.first = first;
    this.last = last;
    this.space();
    return true;
  }

  label(node, index) {
    node.setAttribute("aria-posinset", String(index + 1));
    node.setAttribute("aria-setsize", String(this.items.length));
  }

  // The spacers stand in for the items before and after the rendered ones.
  space() {
    const n = this.items.length, gap = this.gap, offsets = this.offsets;
    const before = this.last < this.first ? offsets[n] : offsets[this.first];
    const after = this.last < this.first ? 0 : offsets[n] - offsets[this.last + 1];
    this.above.style.display = before > 0 ? "" : "none";
    this.above.style.height = `${Math.max(0, before - gap)}px`;
    this.below.style.display = after > 0 ? "" : "none";
    this.below.style.height = `${Math.max(0, after - gap)}px`;
  }

  // Read the rendered nodes' heights; true if one differs from what the layout assumed.
  measure() {
    let changed = false;
    for (const [index, node] of this.nodes) {
      const px = node.getBoundingClientRect().height;
      const was = this.heights[index];
      if (was !== undefined && Math.abs(px - was) < 0.5) continue;
      if (was === undefined) this.learn(px, this.items[index]);
      else this.measured.px += px - was;
      this.heights[index] = px;
      this.memory.heights.set(this.items[index].id, px);
      changed = true;
    }
    if (changed) {
      this.layout();
      this.space();
    }
    return changed;
  }

  // Scroll so that the anchor is where it was on screen (or to the bottom when stuck).
  place(anchor) {
    const log = this.log;
    const target = anchor
      ? this.box.offsetTop + this.offsets[anchor.index] - anchor.delta
      : this.stuck ? log.scrollHeight : null;
    if (target !== null && Math.abs(log.scrollTop - target) >= 1) log.scrollTop = target;
    this.placed = log.scrollTop;
  }

  remember() {
    if (!this.items.length) return; // (a new view, before its items): keep what the last had
    this.memory.stuck = this.stuck;
    if (this.stuck) this.memory.anchor = null;
    else {
      const { index, delta } = this.anchor();
      this.memory.anchor = { id: this.items[index].id, delta };
    }
  }
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
// stays out of the page while a view of the panel is live: a style rule per panel hides it
// from the view's start, and once the kernel has answered the view, the view empties the
// transcripts in its output area as they appear (after every turn the kernel sends a new
// one). It holds every message, which the panel renders only in view: hidden, its nodes
// would still be the page's largest part. The output's data is left as it is: a save writes
// the whole transcript. A view the kernel has not answered within STAND_IN_MS (no kernel, a
// view made from saved widget state; or a cell still running) lets the transcript show until
// it does. When the last view goes the style rule goes; a transcript it emptied says so (the
// kernel sends it again when the panel is closed).
const hiding = new Map(); // fallback id -> {holds, style}
const OUTPUTS = ".jp-OutputArea, .cell_container"; // JupyterLab and Notebook 7; VS Code
const EMPTIED = "agentNbEmptied";
const STAND_IN_MS = 3000;

// Keep panel `id`'s transcripts hidden until the returned release() is called.
function holdHidden(id, marked) {
  let entry = hiding.get(id);
  if (!entry) {
    const style = document.createElement("style");
    style.textContent = `.jp-OutputArea-child:has(${marked}), ${marked} { display: none !important; }`;
    document.head.appendChild(style);
    entry = { holds: 0, style };
    hiding.set(id, entry);
  }
  entry.holds += 1;
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    entry.holds -= 1;
    if (entry.holds === 0) {
      entry.style.remove();
      hiding.delete(id);
    }
  };
}

function hideFallback(id, el) {
  if (!/^[0-9a-f]+$/.test(id || "")) return { live() {}, show() {} };
  const marked = `[data-agent-nb-fallback="${id}"]`;
  let release = holdHidden(id, marked);
  let root = null, observer = null, live = false, gone = false;
  const standIn = setTimeout(() => {
    release();
    release = null;
  }, STAND_IN_MS);
  const empty = () => {
    for (const node of root.querySelectorAll(marked)) {
      if (node.dataset[EMPTIED] === undefined || node.childNodes.length) {
        node.dataset[EMPTIED] = "";
        node.replaceChildren();
      }
    }
  };
  const watch = (frames) => { // the view may not be in its output area yet: a frame later
    if (root || gone) return;
    root = el.closest(OUTPUTS);
    if (!root) {
      if (frames > 0) requestAnimationFrame(() => watch(frames - 1));
      return;
    }
    empty();
    observer = new MutationObserver((records) => {
      if (records.some((r) => !el.contains(r.target))) empty(); // not the panel's own
    });
    observer.observe(root, { childList: true, subtree: true });
  };
  return {
    // The kernel has answered the view (called on each message from it).
    live() {
      if (!live) {
        live = true;
        clearTimeout(standIn);
        if (!release) release = holdHidden(id, marked);
      }
      watch(120);
    },
    show() {
      gone = true;
      clearTimeout(standIn);
      if (observer) observer.disconnect();
      if (root) {
        for (const node of root.querySelectorAll(marked)) {
          if (node.dataset[EMPTIED] === undefined || node.childNodes.length) continue;
          node.textContent = "The panel is closed: its transcript shows when the notebook is opened again.";
        }
      }
      if (release) release();
    },
  };
}

function render({ model, el }) {
  el.classList.add("agent-nb-panel");
  const panel = model.get("_fallback_id"); // this panel, the same in each of its views
  const fallback = hideFallback(panel, el);
  const log = element("div", "agent-nb-panel-log");
  const form = element("div", "agent-nb-panel-input");
  const input = element("textarea", "agent-nb-panel-prompt");
  input.rows = 2;
  input.placeholder = "Message (Enter sends, Shift+Enter: new line)";
  input.setAttribute("aria-label", "message");
  input.dataset.lmSuppressShortcuts = "true"; // Enter is ours, not JupyterLab's
  input.value = drafts.get(panel) || "";
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
  const list = new MessageList(log, bubble, () => model.get("session_id"));

  let live = null; // {frozen, tail}: the answer streaming in
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
    banner.hidden = !editing.has(panel);
    el.classList.toggle("agent-nb-panel-is-editing", editing.has(panel));
  };
  const stopEditing = () => {
    editing.delete(panel);
    showEditing();
  };
  const cancelEditing = () => {
    stopEditing();
    input.value = "";
    drafts.delete(panel);
  };

  const onMessage = (msg) => {
    fallback.live();
    const focus = el.contains(document.activeElement); // a button of a node about to go
    list.noticeScroll();
    if (msg.type === "reset") {
      dropProvisional();
      markLatest(msg.items, true);
      if (editing.has(panel) && !msg.items.some((i) => i.id === editing.get(panel)))
        cancelEditing(); // the prompt being edited is not in this conversation (a switch)
      list.reset(msg.items);
      if (model.get("busy")) live = startLive(""); // a view opened mid-answer
      else notes(msg);
      el.dataset.ready = "1"; // the view shows the conversation (a new view starts empty)
    } else if (msg.type === "append") {
      dropProvisional();
      markLatest(msg.items, false);
      list.append(msg.items);
    } else if (msg.type === "controls") {
      return controls(msg);
    } else if (msg.type === "editing") {
      editing.set(panel, msg.id);
      input.value = msg.text;
      drafts.set(panel, msg.text);
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
      list.stick();
    } else if (msg.type === "delta" && live) {
      if (msg.done) live.frozen.insertAdjacentHTML("beforeend", msg.done);
      if (msg.tail !== null && msg.tail !== undefined) {
        live.tail.replaceChildren();
        live.tail.insertAdjacentHTML("beforeend", msg.tail);
      }
    } else if (msg.type === "end") {
      notes(msg);
    }
    list.update(); // at the bottom, stay there
    if (focus && !el.contains(document.activeElement)) input.focus(); // not lost to the page
  };

  function notes(msg) {
    if (msg.error) {
      const note = element("div", "agent-nb-panel-error agent-nb-panel-note");
      note.setAttribute("role", "alert");
      note.insertAdjacentHTML("beforeend", msg.error);
      if (msg.retry) note.appendChild(button("retry", "Retry", "try again"));
      list.after.appendChild(note);
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
    if (userHtml) list.after.appendChild(bubble({ role: "user", html: userHtml }, "agent-nb-panel-provisional"));
    const answer = bubble({ role: "assistant", html: "" }, "agent-nb-panel-provisional agent-nb-panel-live");
    const body = answer.querySelector(".agent-nb-panel-body");
    const frozen = element("div", "agent-nb-panel-frozen");
    const tail = element("div", "agent-nb-panel-tail");
    body.append(frozen, tail);
    list.after.appendChild(answer);
    return { frozen, tail };
  }

  const submit = () => {
    const text = input.value;
    if (!text.trim() || model.get("busy")) return;
    if (editing.has(panel)) model.send({ type: "send", text, edit: editing.get(panel) });
    else model.send({ type: "send", text });
    input.value = "";
    drafts.delete(panel);
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
  const onInput = () => drafts.set(panel, input.value);
  const onStop = () => model.send({ type: "stop" });
  const onUndo = () => model.send({ type: "undo" });
  const onEscape = (event) => {
    if (event.key !== "Escape") return;
    if (editing.has(panel)) cancelEditing();
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
  if (focused.has(panel)) {
    focused.delete(panel);
    requestAnimationFrame(() => input.focus());
  }
  return () => {
    fallback.show();
    if (document.activeElement === input) focused.add(panel);
    model.off("msg:custom", onMessage);
    model.off("change:busy", onBusy);
    list.destroy();
  };
}

export default { render };
