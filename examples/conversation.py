"""A conversation in the terminal: the Sessions tour, streamed, then saved and restored.

Uses OpenAI when OPENAI_API_KEY is set (model from AGENT_NB_MODEL, default gpt-4o-mini),
the offline "test" provider otherwise. `--chat` then keeps talking with you on stdin.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from agent_nb import Agent, Session
from agent_nb.errors import AgentError
from agent_nb.stores import SQLiteStore


def make_agent() -> Agent:
    if os.environ.get("OPENAI_API_KEY"):
        return Agent(provider="openai", model=os.environ.get("AGENT_NB_MODEL", "gpt-4o-mini"))
    print("(no OPENAI_API_KEY: using the offline 'test' provider, which answers from memory)\n")
    return Agent(provider="test")


def say(session: Session, prompt: str) -> None:
    print(f"you> {prompt}")
    print("model> ", end="", flush=True)
    stream = session.stream(prompt)
    for event in stream:
        if event.type == "text_delta":
            print(event.text, end="", flush=True)
        elif event.type == "tool_call":
            print(f"[calling {event.name}({event.arguments})]", end=" ", flush=True)
    usage = stream.response.usage
    print(f"\n        ({usage.input_tokens} tokens in, {usage.output_tokens} out)\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chat", action="store_true", help="keep chatting on stdin afterwards")
    parser.add_argument("--db", type=Path, help="SQLite file to save the session in")
    args = parser.parse_args()

    agent = make_agent()
    session = agent.session(system="You are concise and friendly.")
    try:
        say(session, "My name is Alice")
        say(session, "I'm a software engineer")
        say(session, "What do you know about me?")

        plan = session.fork(session_id="trip")
        say(plan, "We're planning a trip to Japan: Tokyo and Kyoto")
        print(
            f"The original session has {len(session.messages)} messages; "
            f"the fork has {len(plan.messages)}.\n"
        )

        db = args.db or Path(tempfile.mkdtemp()) / "sessions.db"
        store = SQLiteStore(db)
        store.save(session.session_id, session.to_dict())
        restored = Session.from_dict(store.load(session.session_id), agent)
        print(f"Saved to {db} and restored: {len(restored.messages)} messages.\n")
        say(restored, "Where were we?")

        while args.chat:
            try:
                prompt = input("you> ").strip()
            except EOFError:
                break
            if prompt:
                say(restored, prompt)
    except AgentError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n(stopped; what you saw is kept in the session)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
