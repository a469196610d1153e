"""Model text as HTML that cannot run script, for every route that shows it.

Markdown is parsed by markdown-it-py (CommonMark with GFM tables and strikethrough, raw HTML
off, its link validation on), code is highlighted by Pygments, math is kept for MathJax, and
nh3 checks the result against an allow-list. What the browser gets is exactly that HTML; no
route hands model text to another Markdown parser.

- Only `http`, `https` and `mailto` links survive; images become links (loading a URL the
  model chose would send data to it without a click).
- MathJax typesets only the math found here: each output is marked `mathjax_ignore` (and
  MathJax 2's `tex2jax_ignore`), each formula `mathjax_process`; formulas with macros that
  reach HTML (`\\href`, `\\style`, ...) are shown as code instead.
- Highlighting is inline `color` styles (they survive JupyterLab's sanitizer when a notebook
  is reopened untrusted, where classes would need a stylesheet it strips), in colours that
  read on light and dark backgrounds (contrast >= 3.6:1 on white, #111 and #212121). The
  wrapper carries JupyterLab's Markdown classes, so the rest looks as Markdown does there.
- Lone surrogates (a server splitting a surrogate pair) and NUL become U+FFFD in everything
  published, data and metadata: the kernel could not send them.
"""

from __future__ import annotations

import html as _html
import json
import re
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from .messages import tool_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from markdown_it import MarkdownIt

    from .messages import Message, ToolResultPart

    #: One message's HTML, as message_html makes it.
    Shown = Callable[[Message, dict[str, ToolResultPart]], str]

#: Wraps every output: MathJax skips it, except the formulas marked inside, and JupyterLab
#: (Notebook 7, nbconvert's HTML) styles it as it styles Markdown.
OPEN = (
    '<div class="agent-nb jp-RenderedHTMLCommon jp-RenderedMarkdown mathjax_ignore tex2jax_ignore">'
)
CLOSE = "</div>"

_TAGS = {
    *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "div", "span"),
    *("em", "strong", "del", "s", "code", "pre", "sub", "sup", "a", "details", "summary"),
    *("ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td"),
}
_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}, "span": {"style"}}
_CLASSES = {
    "div": {"math", "mathjax_process", "tex2jax_process"},
    "span": {"math", "mathjax_process", "tex2jax_process"},
}
_STYLES = {"color", "font-style", "font-weight", "text-align"}
_SCHEMES = {"http", "https", "mailto"}
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BLANK_LINE = re.compile(r"\n(?=[ \t]*(?:\n|$))")

#: TeX macros that reach HTML: links, styles, classes, ids, attributes, extensions.
_UNSAFE_TEX = re.compile(r"\\(?:href|url|style|class|cssId|data|bbox|mmlToken|require)(?![A-Za-z])")

#: Token colours: each has contrast >= 3.6:1 on white, #f5f5f5, #111, #1e1e1e and #212121.
_PALETTE = {
    "Keyword": "#9c53e6",
    "Keyword.Constant": "#9c53e6",
    "Operator.Word": "#9c53e6",
    "Name.Builtin": "#088591",
    "Name.Builtin.Pseudo": "#088591",
    "Name.Exception": "#088591",
    "Name.Function": "#1f74ed",
    "Name.Class": "#1f74ed",
    "Name.Tag": "#1f74ed",
    "Name.Decorator": "#da2b9f",
    "Name.Attribute": "#b9610a",
    "String": "#198c22",
    "String.Escape": "#977408",
    "String.Interpol": "#977408",
    "Number": "#b9610a",
    "Comment": "italic #5f806f",
    "Generic.Deleted": "#e82c2c",
    "Generic.Inserted": "#198c22",
    "Generic.Heading": "bold",
    "Generic.Subheading": "bold",
}


def clean(text: str) -> str:
    """`text` as the kernel can send it: surrogate pairs joined, lone ones and NUL as U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def publishable(value: Any) -> Any:
    """`value` (display data or metadata: dicts, lists, strings) with every string cleaned."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): publishable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [publishable(v) for v in value]
    return value


def html(markdown: str) -> str:
    """Model Markdown as safe HTML."""
    return _safe(_parser().render(clean(markdown)))


def escaped(text: str) -> str:
    """Plain text as HTML text."""
    return _html.escape(clean(text))


def wrap(inner: str) -> str:
    """One output's HTML: `inner` inside the wrapper MathJax skips."""
    return OPEN + inner + CLOSE


def display_data(shown: str, plain: str | None = None) -> dict[str, str]:
    """The MIME bundle of one output: the HTML `shown`, wrapped, and its plain-text twin."""
    data = {"text/html": wrap(shown)}
    if plain is not None:
        data["text/plain"] = clean(plain)
    return data


class _Answer(Protocol):
    """What `footer` reads of a Response (events.py imports this module, not the reverse)."""

    model: str | None
    usage: Any
    interrupted: bool
    finish_reason: str | None


def footer(
    response: _Answer,
    seconds: float | None,
    spent: tuple[Any, Any] | None = None,
    context: Iterable[str] = (),
) -> str:
    """The line under an answer: model, this turn's tokens and cost, what the session has
    spent in all, the context window's facts, seconds, and how it ended (HTML). `spent`:
    (this turn's Cost, the session's); `context`: facts as HTML (the notebook's gauge)."""
    facts = [f"<code>{escaped(str(response.model))}</code>"] if response.model else []
    usage = response.usage
    turn = ""
    if usage.input_tokens or usage.output_tokens:
        about = "~" if usage.estimated else ""  # the server reported none: our estimate
        turn = f"{about}{usage.input_tokens:,} in · {about}{usage.output_tokens:,} out tokens"
    if spent is not None and spent[0].worth_saying:
        turn += (", " if turn else "") + escaped(str(spent[0]))
    if turn:
        facts.append(f"this turn {turn}")
    if spent is not None and spent[1].worth_saying and spent[1].requests > spent[0].requests:
        facts.append(f"session spent {escaped(str(spent[1]))}")
    facts.extend(context)
    if seconds is not None:
        facts.append(f"{seconds:.1f} s")
    if response.interrupted:
        facts.append("<strong>interrupted</strong>")  # what was kept: the error's one line
    if response.finish_reason == "length":
        facts.append("cut at max_tokens")
    return _safe("<p><sub>" + " · ".join(facts) + "</sub></p>\n") if facts else ""


def tool_block(
    name: str,
    arguments: dict[str, Any],
    result: str | None,
    is_error: bool,
    server: str | None = None,
) -> str:
    """A collapsible block for one tool call and its result (HTML); `server`: the MCP
    server the tool is from, said after the call."""
    args = escaped(json.dumps(arguments, ensure_ascii=False))
    mark = "⚠️" if is_error else "🔧"
    body = "" if result is None else f"<pre><code>{escaped(result)}</code></pre>"
    summary = f"<summary>{mark} <code>{escaped(name)}({args})</code>{from_server(server)}</summary>"
    return _safe(f"<details>{summary}{body}</details>\n")


def from_server(server: str | None) -> str:
    """What a tool call's card or block says of the MCP server its tool is from (HTML)."""
    return "" if server is None else f" · MCP server <code>{escaped(server)}</code>"


def turn_parts(
    messages: Iterable[Message], results: dict[str, ToolResultPart] | None = None
) -> list[tuple[str, str]]:
    """One turn's answer in order: ("markdown", model text) and ("html", tool block) parts.

    A call's result is looked up in `results` (by call id), or in `messages`.
    """
    messages = list(messages)
    if results is None:
        results = _results(messages)
    parts = []
    for message in messages:
        if message.role != "assistant":
            continue
        if message.text:
            parts.append(("markdown", message.text))
        sources = message.metadata.get("tool_sources")
        for call in message.tool_calls:
            result = results.get(call.id)
            block = tool_block(
                call.name,
                call.arguments_json(),
                result.content if result else None,
                bool(result and result.is_error),
                tool_server(sources, call.id),
            )
            parts.append(("html", block))
    return parts


def turn_html(
    messages: Iterable[Message],
    results: dict[str, ToolResultPart] | None = None,
    markdown: Callable[[str], str] = html,
) -> str:
    """One turn's answer as HTML: each message's text, then its tool calls (`markdown`
    renders the text: html, or one that keeps what it rendered)."""
    parts = turn_parts(messages, results)
    return "".join(markdown(part) if kind == "markdown" else part for kind, part in parts)


def message_html(
    message: Message, results: dict[str, ToolResultPart], markdown: Callable[[str], str] = html
) -> str:
    """One message as a transcript shows it ("" for tool results: they are in their calls'
    blocks, looked up in `results`)."""
    if message.role == "assistant":
        return turn_html([message], results, markdown)
    if message.role in ("user", "system"):
        return markdown(message.text) + images_html(message)
    return ""


def transcript_html(
    messages: Iterable[Message], system: str | None = None, shown: Shown = message_html
) -> str:
    """A whole conversation as HTML (each message's HTML from `shown`, a message_html)."""
    messages = list(messages)
    results = _results(messages)
    out = [_said("system", html(system))] if system else []
    names = {"user": "you", "assistant": "assistant", "system": "system"}
    for message in messages:
        if message.role in names:
            body = shown(message, results)
            if body or message.role != "assistant":
                out.append(_said(names[message.role], body))
    return "".join(out)


def images_html(message: Message) -> str:
    """The images the user sent, inline: data URLs built here from checked image bytes (a
    URL the model wrote never becomes an image: those become links)."""
    return "".join(
        f'<p><img src="{image.data_url}" alt="image {number} of the prompt"></p>\n'
        for number, image in enumerate(message.images, 1)
    )


def transcript_text(messages: Iterable[Message], system: str | None = None) -> str:
    """A whole conversation as plain text."""
    out = [f"system: {system}"] if system else []
    names = {"user": "you", "assistant": "assistant", "system": "system"}
    for message in messages:
        if message.role in names and message.text:
            out.append(f"{names[message.role]}: {message.text}")
        for call in message.tool_calls:
            out.append(f"[tool] {call.name}({json.dumps(call.arguments_json())})")
    return clean("\n\n".join(out) + "\n")


def answer_html(text: str, refusal: str | None) -> str | None:
    """A Response as a notebook shows it: its answer (None: nothing to show)."""
    if text:
        return wrap(html(text))
    if refusal:
        return wrap(f"<p><em>(refused: {escaped(refusal)})</em></p>")
    return None


def session_html(
    session_id: str, messages: list[Message], system: str | None, shown: Shown = message_html
) -> str:
    """A Session as a notebook shows it: a header line, then the transcript."""
    count = f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
    header = f"<p><em>session <code>{escaped(session_id)}</code> · {count}</em></p>\n"
    return wrap(header + transcript_html(messages, system, shown))


def one_line(text: str) -> str:
    """Text for a one-line summary: newlines as spaces, control characters (terminal
    escapes among them) as U+FFFD."""
    return _CONTROL.sub("\ufffd", clean(text).replace("\n", " "))


def code_blocks(markdown: str, languages: set[str]) -> list[tuple[str, str]]:
    """`markdown` cut around its top-level fenced blocks in `languages`: ("markdown", text)
    and ("code", the block's code) pieces, in order; blank pieces are left out."""
    source = clean(markdown).replace("\r\n", "\n").replace("\r", "\n")
    lines = source.split("\n")
    pieces, at = [], 0
    for token in _parser().parse(source):
        info = token.info.split(maxsplit=1)
        if token.type == "fence" and token.level == 0 and info and info[0].lower() in languages:
            start, end = token.map
            pieces.append(("markdown", "\n".join(lines[at:start])))
            pieces.append(("code", token.content.rstrip("\n")))
            at = end
    pieces.append(("markdown", "\n".join(lines[at:])))
    return [(kind, text) for kind, text in pieces if text.strip()]


def markdown_cell(shown: str) -> str:
    """HTML of ours as the source of a Markdown cell, shown as is by every Markdown renderer.

    It is one HTML block: it starts with a <div> and has no blank line (a newline before one
    is written `&#10;`), so CommonMark, marked (JupyterLab), mistune (nbconvert) and GitHub
    pass it through without reading Markdown or math in it; `$` and `\\` are written as
    character references, so no math extraction sees them (MathJax still typesets the
    formulas marked `mathjax_process`, from the text the browser decodes).
    """
    source = wrap(shown).replace("$", "&#36;").replace("\\", "&#92;")
    return _BLANK_LINE.sub("&#10;", source)


def _results(messages: list[Message]) -> dict[str, ToolResultPart]:
    return {result.tool_call_id: result for m in messages for result in m.tool_results}


def _said(who: str, body: str) -> str:
    """`body` (HTML) introduced by who said it, in its first paragraph if it starts with one."""
    if body.startswith("<p>"):
        return f"<p><strong>{who}</strong>: {body[3:]}"
    return f"<p><strong>{who}</strong>:</p>\n{body}"


def _safe(markup: str) -> str:
    return _cleaner().clean(markup)


@cache
def _cleaner() -> Any:
    import nh3

    return nh3.Cleaner(
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        allowed_classes=_CLASSES,
        filter_style_properties=_STYLES,
        url_schemes=_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


@cache
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.amsmath import amsmath_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    parser = MarkdownIt("commonmark", {"html": False, "highlight": _highlight})
    parser.enable(["table", "strikethrough"])
    parser.use(dollarmath_plugin, allow_labels=False, allow_digits=False, double_inline=True)
    parser.use(amsmath_plugin)
    for rule in ("math_inline", "math_inline_double", "math_block", "amsmath"):
        parser.add_render_rule(rule, _render_math)
    parser.add_render_rule("image", _render_image)
    return parser


def _render_math(renderer: Any, tokens: list[Any], index: int, options: Any, env: Any) -> str:
    token = tokens[index]
    source = token.content
    if token.type != "amsmath":
        dollars = "$" if token.type == "math_inline" else "$$"
        source = dollars + source.strip("\n") + dollars
    inline = token.type.startswith("math_inline")
    if _UNSAFE_TEX.search(source):  # shown, never typeset
        code = f"<code>{_html.escape(source)}</code>"
        return code if inline else f"<pre>{code}</pre>"
    tag = "span" if inline else "div"
    return f'<{tag} class="math mathjax_process tex2jax_process">{_html.escape(source)}</{tag}>'


def _render_image(renderer: Any, tokens: list[Any], index: int, options: Any, env: Any) -> str:
    token = tokens[index]
    source = str(token.attrGet("src") or "")
    alt = renderer.renderInlineAsText(token.children or [], options, env) or source
    return f'<a href="{_html.escape(source)}">🖼 {_html.escape(alt)}</a>'


def _highlight(code: str, language: str, attributes: str) -> str:
    lexer = _lexer(language.lower()) if language else None
    if lexer is None:
        return f"<pre><code>{_html.escape(code)}</code></pre>"
    from pygments import highlight

    return f"<pre><code>{highlight(code, lexer, _formatter())}</code></pre>"


@lru_cache(maxsize=64)  # the model names the languages: keep the cache small
def _lexer(language: str) -> Any:
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


@cache
def _formatter() -> Any:
    from pygments.formatters import HtmlFormatter
    from pygments.style import Style
    from pygments.token import string_to_tokentype

    class Colours(Style):
        styles = {string_to_tokentype(name): style for name, style in _PALETTE.items()}

    return HtmlFormatter(style=Colours, noclasses=True, nowrap=True)
