"""An OpenAI-compatible Chat Completions server on 127.0.0.1, for tests and benchmarks.

It speaks the wire format as OpenAI sends it (SSE chunks with `include_usage`, `[DONE]`,
tool-call argument fragments, JSON error bodies) over a real socket. Unscripted, it answers
like the offline test provider: from the conversation, calling tools the prompt asks for,
with schema-valid JSON for `response_format`. `script(...)` queues exact replies and faults.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent_nb.providers.testing import echo, example, tool_calls_for


class QuietServer(ThreadingHTTPServer):
    """Connections the tests cut on purpose are not errors worth a traceback; `shutdown()`
    returns within 20 ms (the standard 0.5 s poll cost a second to each test with two)."""

    def serve_forever(self, poll_interval: float = 0.02) -> None:
        super().serve_forever(poll_interval)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | OSError):
            super().handle_error(request, client_address)


@dataclass
class Reply:
    """One scripted answer; fields left empty take the unscripted behaviour."""

    text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments"}
    refusal: str | None = None
    finish_reason: str | None = None
    status: int = 200
    error: dict[str, Any] | None = None  # the body of an error answer
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | bytes | None = None  # send this body exactly, with `status` and `content_type`
    content_type: str = "text/event-stream; charset=utf-8"
    split_seed: int | None = None  # cut a raw body at random byte boundaries
    drop_after: int | None = None  # send this many stream events, then cut the connection
    stall_after: int | None = None  # after this many events, go silent for `stall` seconds
    stall: float = 0.0
    chunk_delay: float | None = None
    usage: dict[str, Any] | None = None
    no_usage: bool = False  # send no usage chunk, even when asked (llama.cpp does so)


class FakeOpenAI:
    """Start with `with FakeOpenAI() as server:`; `server.url` is the base_url."""

    def __init__(self, *, chunk_delay: float = 0.0, words_per_chunk: int = 1) -> None:
        self.chunk_delay = chunk_delay
        self.words_per_chunk = words_per_chunk
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        #: What `GET /props` (llama.cpp) and `POST /api/show` (Ollama) answer; None: 404.
        self.props: dict[str, Any] | None = None
        self.show: dict[str, Any] | None = None
        #: What `GET /api/ps` (Ollama), `GET /v1/models` (vLLM) and `GET /api/v0/models/NAME`
        #: (LM Studio, by NAME) answer; None (or a NAME not there): 404. Any JSON value, or
        #: bytes sent as they are (a hostile answer).
        self.ps: Any = None
        self.models: Any = None
        self.lmstudio: dict[str, Any] = {}
        self.probes: list[tuple[str, str, Any]] = []  # (method, path, body) of each
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._ids = 0

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply | str) -> None:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._script.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.request_headers.clear()
            self.probes.clear()
            self.show = None  # a test that set what a model takes must not leak into the next
            self.props = self.ps = self.models = None
            self.lmstudio = {}

    def _next(self, body: dict[str, Any], headers: dict[str, str], protocol: str = "chat") -> Reply:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            self._ids += 1
            reply = self._script.popleft() if self._script else Reply()
        answers = reply.status < 300
        if reply.text is None and not reply.tool_calls and reply.raw is None and answers:
            _answer(PROTOCOLS[protocol].read(body), reply)
        return reply

    def request_id(self) -> str:
        return f"req_fake_{self._ids}"


@dataclass
class Conversation:
    """What a request says, whatever its wire format."""

    users: list[str]
    tool_outputs: list[str]  # of the last round, when the request ends with tool results
    tools: list[dict[str, Any]]  # {"name", "parameters"}
    schema: dict[str, Any] | None
    forced: str | None = None  # the tool tool_choice names; "required": some tool
    system: str = ""


def _answer(conversation: Conversation, reply: Reply) -> None:
    """Fill `reply` the way the offline test provider would answer."""
    forced = conversation.forced
    if forced == "required" and not conversation.tool_outputs:
        forced = None if tool_calls_for(conversation.tools, conversation.users) else "last"
    elif forced == "required":
        forced = "last"
    if forced is not None:
        spec = (
            conversation.tools[-1]
            if forced == "last"
            else next(t for t in conversation.tools if t["name"] == forced)
        )
        args = example(spec["parameters"], conversation.users, spec["name"])
        reply.tool_calls = [{"name": spec["name"], "arguments": args}]
        return
    asked = re.search(r"```json\n(.*?)\n```", conversation.system, re.DOTALL)
    if asked and not conversation.tool_outputs:  # json(output_mode="prompted")
        value = example(json.loads(asked.group(1)), conversation.users)
        reply.text = f"```json\n{json.dumps(value)}\n```"
        return
    if conversation.tool_outputs:
        reply.text = "Here is what I found: " + "; ".join(conversation.tool_outputs) + "."
    elif conversation.tools and (calls := tool_calls_for(conversation.tools, conversation.users)):
        reply.tool_calls = [{"name": name, "arguments": args} for name, args in calls]
    elif conversation.schema is not None:
        reply.text = json.dumps(example(conversation.schema, conversation.users))
    else:
        reply.text = echo(conversation.users)


def _read_chat(body: dict[str, Any]) -> Conversation:
    messages = body.get("messages", [])
    outputs = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        outputs.insert(0, message["content"])
    format_ = body.get("response_format") or {}
    choice = body.get("tool_choice")
    return Conversation(
        users=[
            _said(m["content"]) for m in messages if m.get("role") == "user" and m.get("content")
        ],
        tool_outputs=outputs,
        tools=[t["function"] for t in body.get("tools", [])],
        schema=format_["json_schema"]["schema"]
        if format_.get("type") == "json_schema"
        else format_.get("schema"),  # {"type": "json_object", "schema": ...}: llama.cpp's
        forced=choice["function"]["name"] if isinstance(choice, dict) else _required(choice),
        system="".join(m["content"] for m in messages if m.get("role") in ("system", "developer")),
    )


def _said(content: Any) -> str:
    """A user message's text: the content itself, or its text parts (beside images)."""
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p.get("type") in ("text", "input_text"))


def _required(choice: Any) -> str | None:
    return "required" if choice in ("required", "any") else None


def _read_anthropic(body: dict[str, Any]) -> Conversation:
    users, outputs = [], []
    for message in body.get("messages", []):
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if message["role"] == "user":
            users += [b["text"] for b in blocks if b["type"] == "text" and b["text"]]
            outputs = [b["content"] for b in blocks if b["type"] == "tool_result"]
            if any(b["type"] == "text" for b in blocks):
                outputs = []
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
    choice = body.get("tool_choice") or {}
    return Conversation(
        users=users,
        tool_outputs=outputs,
        schema=schema,
        tools=[{"name": t["name"], "parameters": t["input_schema"]} for t in body.get("tools", [])],
        forced=choice.get("name")
        if choice.get("type") == "tool"
        else _required(choice.get("type")),
        system=_anthropic_system(body.get("system")),
    )


def _anthropic_system(system: Any) -> str:
    """The system prompt: a string, or text blocks (as sent with cache breakpoints)."""
    if isinstance(system, list):
        return "".join(block["text"] for block in system)
    return system or ""


def _read_responses(body: dict[str, Any]) -> Conversation:
    items = body.get("input", [])
    outputs = []
    for item in reversed(items):
        if item.get("type") != "function_call_output":
            break
        outputs.insert(0, item["output"])
    format_ = (body.get("text") or {}).get("format") or {}
    choice = body.get("tool_choice")
    return Conversation(
        users=[_said(i["content"]) for i in items if i.get("role") == "user" and i.get("content")],
        tool_outputs=outputs,
        tools=[{"name": t["name"], "parameters": t["parameters"]} for t in body.get("tools", [])],
        schema=format_.get("schema") if format_.get("type") == "json_schema" else None,
        forced=choice["name"] if isinstance(choice, dict) else _required(choice),
        system=body.get("instructions") or "",
    )


def _handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server.probes.append(("GET", self.path, None))
            name = urllib.parse.unquote(self.path.removeprefix("/api/v0/models/"))
            answer = {
                "/props": server.props,
                "/api/ps": server.ps,
                "/v1/models": server.models,
            }.get(self.path, server.lmstudio.get(name) if name != self.path else None)
            if answer is None:
                self._json(404, {"error": {"message": f"no route {self.path}"}})
            elif isinstance(answer, bytes):
                self._raw(200, answer)
            else:
                self._json(200, answer)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/show":
                server.probes.append(("POST", self.path, body))
                if server.show is None:
                    self._json(404, {"error": f"model '{body.get('model')}' not found"})
                else:
                    self._json(200, server.show)
                return
            if server._script and server._script[0].raw is not None:  # a replay: any path
                self._stream_raw(server._next(body, dict(self.headers.items())))
                return
            protocol = next(
                (name for name, p in PROTOCOLS.items() if self.path.endswith(p.path)), None
            )
            if protocol is None:
                error = {"message": f"no route {self.path}", "type": "invalid_request_error"}
                self._json(404, {"error": error})
                return
            wire = PROTOCOLS[protocol]
            if str(body.get("model", "")).startswith("no-such-model"):  # as OpenAI answers it
                message = (
                    f"The model `{body['model']}` does not exist or you do not have access to it."
                )
                error = {
                    "message": message,
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
                self._json(404, {"error": error})
                return
            reply = server._next(body, dict(self.headers.items()), protocol)
            if 300 <= reply.status < 400:  # a redirect: `headers` says where
                self._json(reply.status, {}, reply.headers)
            elif reply.status >= 400:
                error = reply.error or {
                    "error": {"message": f"error {reply.status}", "type": "api_error"}
                }
                self._json(reply.status, error, reply.headers)
            elif reply.raw is not None:
                self._stream_raw(reply)
            elif body.get("stream"):
                self._stream(wire.events(body, reply, server.words_per_chunk), reply)
            else:
                time.sleep(reply.stall)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._json(200, wire.whole(body, reply, server.request_id()), reply.headers)

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._raw(status, json.dumps(payload).encode(), headers)

        def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", server.request_id())
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _start_stream(self, headers: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-request-id", server.request_id())
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def _stream_raw(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            self.send_header("transfer-encoding", "chunked")
            for key, value in reply.headers.items():
                if key.lower() not in {
                    "content-type",
                    "content-length",
                    "transfer-encoding",
                    "content-encoding",
                }:
                    self.send_header(key, value)
            self.end_headers()
            raw = reply.raw.encode() if isinstance(reply.raw, str) else reply.raw
            if reply.drop_after is not None:
                self._chunk(raw[: reply.drop_after])
                self._cut()
                return
            rng = random.Random(reply.split_seed)
            position = 0
            while position < len(raw):
                size = rng.randint(1, 48) if reply.split_seed is not None else len(raw)
                self._chunk(raw[position : position + size])
                position += size
                if reply.split_seed is not None and rng.random() < 0.05:
                    time.sleep(0.001)  # let some pieces arrive in reads of their own
            self.wfile.write(b"0\r\n\r\n")

        def _stream(self, events: list[bytes], reply: Reply) -> None:
            delay = server.chunk_delay if reply.chunk_delay is None else reply.chunk_delay
            self._start_stream(reply.headers)
            try:
                for count, event in enumerate(events):
                    if reply.drop_after is not None and count >= reply.drop_after:
                        self._cut()
                        return
                    if reply.stall_after is not None and count == reply.stall_after:
                        time.sleep(reply.stall)
                    if delay:
                        time.sleep(delay)
                    self._chunk(event)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _cut(self) -> None:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    return Handler


def _usage(body: dict[str, Any], reply: Reply, text: str) -> dict[str, Any]:
    if reply.usage is not None:
        return reply.usage
    items = body.get("messages") or body.get("input") or []
    prompt = sum(len(str(m.get("content") or m.get("output") or "").split()) for m in items)
    completion = len(text.split()) + len(reply.tool_calls) * 5
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _completion(body: dict[str, Any], reply: Reply, request_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": reply.refusal}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}_{request_id}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
        "usage": _usage(body, reply, reply.text or ""),
    }


def _chunks(body: dict[str, Any], reply: Reply, words_per_chunk: int) -> list[bytes]:
    """The stream, as OpenAI frames it: one `data:` event per chunk, then `[DONE]`."""
    model = body.get("model", "fake")
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    events = [event({"role": "assistant", "content": ""})]
    text = reply.text or ""
    events += [event({"content": piece}) for piece in _words(text, words_per_chunk)]
    if reply.refusal:
        events.append(event({"refusal": reply.refusal}))
    for index, call in enumerate(reply.tool_calls):
        arguments = json.dumps(call["arguments"])
        events.append(
            event(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": call["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        for start in range(0, len(arguments), 7):  # arguments arrive in fragments
            events.append(
                event(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": arguments[start : start + 7]},
                            }
                        ]
                    }
                )
            )
    events.append(event({}, _finish(reply)))
    if body.get("stream_options", {}).get("include_usage") and not reply.no_usage:
        usage_chunk = {**base, "choices": [], "usage": _usage(body, reply, text)}
        events.append(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _words(text: str, per_chunk: int) -> list[str]:
    words = text.split(" ")
    pieces = []
    for start in range(0, len(words), per_chunk):
        piece = " ".join(words[start : start + per_chunk])
        if start + per_chunk < len(words):
            piece += " "
        if piece:
            pieces.append(piece)
    return pieces


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _anthropic_whole(body: dict[str, Any], reply: Reply, request_id: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for index, call in enumerate(reply.tool_calls):
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_{index}_{request_id}",
                "name": call["name"],
                "input": call["arguments"],
            }
        )
    usage = _usage(body, reply, reply.text or "")
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else (reply.finish_reason or "end_turn"),
        # a scripted usage in Anthropic's own shape (cache counters and all) goes as it is
        "usage": usage
        if "input_tokens" in usage
        else {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]},
    }


def _anthropic_events(body: dict[str, Any], reply: Reply, per_chunk: int) -> list[bytes]:
    whole = _anthropic_whole(body, reply, "stream")
    start = {
        **whole,
        "content": [],
        "stop_reason": None,
        "usage": {**whole["usage"], "output_tokens": 1},
    }
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(whole["content"]):
        opening = (
            {"type": "text", "text": ""} if block["type"] == "text" else {**block, "input": {}}
        )
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if block["type"] == "text":
            deltas = [{"type": "text_delta", "text": w} for w in _words(block["text"], per_chunk)]
        else:
            raw = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": raw[i : i + 7]}
                for i in range(0, len(raw), 7)
            ]
        events += [
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": whole["stop_reason"]},
                "usage": {"output_tokens": whole["usage"]["output_tokens"]},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def _responses_whole(body: dict[str, Any], reply: Reply, request_id: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reply.text:
        output.append(
            {
                "type": "message",
                "id": f"msg_{request_id}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    for index, call in enumerate(reply.tool_calls):
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{index}",
                "call_id": f"call_{index}",
                "name": call["name"],
                "arguments": json.dumps(call["arguments"]),
                "status": "completed",
            }
        )
    usage = _usage(body, reply, reply.text or "")
    return {
        "id": f"resp_{request_id}",
        "object": "response",
        "model": body.get("model", "fake"),
        "status": "completed",
        "output": output,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _responses_events(body: dict[str, Any], reply: Reply, per_chunk: int) -> list[bytes]:
    whole = _responses_whole(body, reply, "stream")
    events = [
        _sse(
            "response.created",
            {
                "type": "response.created",
                "response": {**whole, "status": "in_progress", "output": []},
            },
        )
    ]
    for index, item in enumerate(whole["output"]):
        events.append(
            _sse(
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": index, "item": item},
            )
        )
        if item["type"] == "message":
            events += [
                _sse(
                    "response.output_text.delta",
                    {"type": "response.output_text.delta", "output_index": index, "delta": w},
                )
                for w in _words(reply.text or "", per_chunk)
            ]
        else:
            raw = item["arguments"]
            events += [
                _sse(
                    "response.function_call_arguments.delta",
                    {
                        "type": "response.function_call_arguments.delta",
                        "output_index": index,
                        "delta": raw[i : i + 7],
                    },
                )
                for i in range(0, len(raw), 7)
            ]
        events.append(
            _sse(
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": index, "item": item},
            )
        )
    events.append(_sse("response.completed", {"type": "response.completed", "response": whole}))
    return events


@dataclass(frozen=True)
class _Protocol:
    path: str
    read: Any
    whole: Any
    events: Any


PROTOCOLS = {
    "chat": _Protocol("/chat/completions", _read_chat, _completion, _chunks),
    "anthropic": _Protocol("/messages", _read_anthropic, _anthropic_whole, _anthropic_events),
    "responses": _Protocol("/responses", _read_responses, _responses_whole, _responses_events),
}
