"""Hostile model text, and the check that HTML made from it is inert (html5lib parses it as a
browser does). Shared by tests/test_render.py and tests/test_browser.py."""

from __future__ import annotations

import re

import html5lib

#: Each one ran script, or made a live script link, in some renderer once (or might).
PAYLOADS = [
    # the families of issue 10, item 1, as written there
    "<details open ontoggle=alert(1) <>",
    "<details open ontoggle=alert(2)",
    "```\ncode\n   ```\n<img src=x onerror=alert(3)>",
    "```\ncode\n`````\n<img src=x onerror=alert(4)>",
    "``<img src=x onerror=alert(5)>```",
    "\\`<img src=x onerror=alert(6)>`",
    "\\``x`` <img src=x onerror=alert(7)> `",
    "[x](javascript:alert(8))",
    "[x][ref]\n\n[ref]: javascript:alert(9)",
    "[x](javascript&colon;alert(10))",
    # entity-encoded schemes, tabs and newlines inside the scheme
    "[x](&#106;avascript:alert(11))",
    "[x](&#x6A;&#x61;vascript:alert(12))",
    "[x](javascript&#58;alert(13))",
    "[x](<java\tscript:alert(14)>)",
    "[x](<java\nscript:alert(15)>)",
    "[x](java&#9;script:alert(16))",
    "[x](jav&#x0A;ascript:alert(17))",
    "[x](JaVaScRiPt:alert(18))",
    "[x]( javascript:alert(19) 'title')",
    "[x](vbscript:msgbox(20))",
    '<a href="jav&#x09;ascript:alert(21)">x</a>',
    # data: URLs
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgyMik8L3NjcmlwdD4=)",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMjMpPjwvc3ZnPg==)",
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    "<data:text/html,<script>alert(25)</script>>",
    # attributes without quotes, unclosed tags
    "<img src=x onerror=alert(26)>",
    "<a href=javascript:alert(27)>x</a>",
    "<div onmouseover=alert(28)>hover</div>",
    "<body onload=alert(29)>",
    "<script>alert(30)",
    "<img src=x onerror=alert(31)",
    "<iframe src=javascript:alert(32)",
    "<scr<script>ipt>alert(33)</script>",
    "<img src=x:alert(alt) onerror=eval(src) alt=34>",
    "<img src=x *onerror*=alert(35)>",
    # SVG and MathML
    "<svg onload=alert(36)>",
    "<svg><script>alert(37)</script></svg>",
    '<svg><a xlink:href="javascript:alert(38)"><text y="20">x</text></a></svg>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(39)>",
    '<math href="javascript:alert(40)">x</math>',
    "<svg><animate onbegin=alert(41) attributeName=x dur=1s>",
    # elements that run or redirect
    "<iframe srcdoc='<script>alert(42)</script>'>",
    "<object data=javascript:alert(43)>",
    "<embed src=javascript:alert(44)>",
    "<form action=javascript:alert(45)><button>go</button></form>",
    "<base href=javascript:alert(46)//>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(47)">',
    '<link rel="stylesheet" href="javascript:alert(48)">',
    '<div style="width: expression(alert(49))">x</div>',
    "<style>*{background:url(javascript:alert(50))}</style>",
    '<!--<img src="--><img src=x onerror=alert(51)//">',
    '<noscript><p title="</noscript><img src=x onerror=alert(52)>">',
    # unclosed fences, fences closed by indented or longer fences
    "```\n<img src=x onerror=alert(53)>",
    "~~~\n<script>alert(54)</script>",
    "````\n```\n````\n<img src=x onerror=alert(55)>",
    "    indented\n<img src=x onerror=alert(56)>",
    "`unclosed <img src=x onerror=alert(57)>",
    "`a\n\n<img src=x onerror=alert(58)>\n\nb`",
    # HTML in tables and lists
    "| a | b |\n|---|---|\n| <img src=x onerror=alert(59)> | [x](javascript:alert(60)) |",
    "| `<script>` | <iframe src=javascript:alert(61)> |\n|---|---|\n| x | y |",
    "- <img src=x onerror=alert(62)>\n- [x](javascript:alert(63))",
    "1. <script>alert(64)</script>\n   > <svg onload=alert(65)>",
    # reference-style links and autolinks
    "[x]\n\n[x]: <javascript:alert(66)>",
    "![x][i]\n\n[i]: javascript:alert(67)",
    "[x][]\n\n[x]: data:text/html,<script>alert(68)</script>",
    "<javascript:alert(69)>",
    "<JAVASCRIPT:alert(70)>",
    "<vbscript:msgbox(71)>",
    '<https://example.com/"onmouseover=alert(72)>',
    "<mailto:x@example.com?body=<script>alert(73)</script>>",
    # math that could reach HTML through MathJax
    "$\\href{javascript:alert(74)}{x}$",
    "$$\\href{javascript:alert(75)}{x}$$",
    "$\\style{background:url(javascript:alert(76))}{x}$",
    "\\\\(\\href{javascript:alert(77)}{x}\\\\)",
    # odd characters around tags
    "<scr\x00ipt>alert(78)</script>",
    "\ud800<img src=x onerror=alert(79)>\udfff",
    "\x1b]8;;javascript:alert(80)\x1b\\link\x1b]8;;\x1b\\",
]

#: Elements nothing we show may contain (MathJax's own <math> only appears in a browser).
FORBIDDEN = {
    *("script", "iframe", "frame", "frameset", "object", "embed", "applet", "form", "base"),
    *("meta", "link", "style", "img", "svg", "math", "input", "button", "textarea", "select"),
    *("template", "noscript", "video", "audio", "source", "portal"),
}
URL_ATTRIBUTES = {
    *("href", "src", "action", "formaction", "data", "poster", "background", "codebase"),
    *("cite", "lowsrc", "dynsrc", "ping", "srcset", "xlink:href"),
}
_SCHEME = re.compile(r"^(?:javascript|vbscript|data):")
_STYLE_HAZARD = re.compile(r"expression\(|url\(|javascript:|behavior|binding|@import", re.I)


def problems(markup: str) -> list[str]:
    """What in `markup` could run script or load a URL by itself; empty when inert."""
    found = []
    tree = html5lib.parseFragment(markup, treebuilder="etree", namespaceHTMLElements=False)
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue  # a comment
        tag = element.tag.rsplit("}", 1)[-1].lower()
        if tag in FORBIDDEN:
            found.append(f"<{tag}>")
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            if "xlink" in name:
                local = f"xlink:{local}"
            if local.startswith("on") or local == "srcdoc":
                found.append(f"<{tag} {local}=...>")
            if local in URL_ATTRIBUTES and _SCHEME.match(_squeezed(value)):
                found.append(f"<{tag} {local}={value!r}>")
            if local == "style" and _STYLE_HAZARD.search(value):
                found.append(f"<{tag} style={value!r}>")
    return found


def _squeezed(url: str) -> str:
    """A URL as a browser reads its scheme: whitespace and control characters dropped."""
    return "".join(c for c in url if c > " " and c != "\x7f").lower()


def chat_stream(pieces: list[str], model: str) -> str:
    """A Chat Completions stream as a hostile server sends it: these text deltas (a surrogate
    pair may be split across two), under this model name."""
    import json

    def event(delta: dict, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {"id": "x", "object": "chat.completion.chunk", "model": model, "choices": [choice]}
        return f"data: {json.dumps(chunk)}\n\n"

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": piece}) for piece in pieces]
    return "".join([*events, event({}, "stop"), "data: [DONE]\n\n"])


def chat_completion(text: str, model: str) -> str:
    """A whole (not streamed) Chat Completions answer, as a hostile server sends it."""
    import json

    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return json.dumps({"id": "x", "object": "chat.completion", "model": model, "choices": [choice]})
