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
    if (this.updating || !log.isConnected || log.clientWidth === 0) return; // not laid out
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

// One message's node: {id, role, html} -> element (data-id: the message's id).
function bubble(item) {
  const known = Object.hasOwn(ROLES, item.role) ? item.role : "assistant";
  const node = element("div", `agent-nb-panel-message agent-nb-panel-${known}`);
  if (item.id) node.dataset.id = item.id;
  node.appendChild(element("div", "agent-nb-panel-role", ROLES[known]));
  const body = element("div", "agent-nb-panel-body agent-nb jp-RenderedHTMLCommon jp-RenderedMarkdown");
  body.insertAdjacentHTML("beforeend", item.html);
  node.appendChild(body);
  return node;
}

function render({ model, el }) {
  el.classList.add("agent-nb-panel");
  const log = element("div", "agent-nb-panel-log");
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
  const list = new MessageList(log, bubble, () => model.get("session_id"));

  let live = null; // {frozen, tail}: the answer streaming in
  const dropProvisional = () => {
    for (const e of log.querySelectorAll(".agent-nb-panel-provisional, .agent-nb-panel-note"))
      e.remove();
    live = null;
  };

  const onMessage = (msg) => {
    if (msg.type === "reset") {
      dropProvisional();
      list.reset(msg.items);
      if (model.get("busy")) live = startLive(""); // a view opened mid-answer
      else notes(msg);
    } else if (msg.type === "append") {
      dropProvisional();
      list.append(msg.items);
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
  };

  function notes(msg) {
    if (msg.footer) {
      const note = element("div", "agent-nb-panel-footer agent-nb-panel-note agent-nb jp-RenderedHTMLCommon");
      note.insertAdjacentHTML("beforeend", msg.footer);
      list.after.appendChild(note);
    }
    if (msg.error) {
      const note = element("div", "agent-nb-panel-error agent-nb-panel-note");
      note.setAttribute("role", "alert");
      note.insertAdjacentHTML("beforeend", msg.error);
      list.after.appendChild(note);
    }
  }

  function startLive(userHtml) {
    if (userHtml) {
      const prompt = bubble({ role: "user", html: userHtml });
      prompt.classList.add("agent-nb-panel-provisional");
      list.after.appendChild(prompt);
    }
    const answer = bubble({ role: "assistant", html: "" });
    answer.classList.add("agent-nb-panel-provisional", "agent-nb-panel-live");
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
    if (document.activeElement === input) focused.add(model);
    model.off("msg:custom", onMessage);
    model.off("change:busy", onBusy);
    list.destroy();
  };
}

export default { render };
