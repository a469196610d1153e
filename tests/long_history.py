"""A long conversation whose messages differ in height: for the panel's window tests and
benchmarks/panel.py. Each message starts with its marker, m<index>."""

from __future__ import annotations

import random

from agent_nb import Message

WORDS = ("the", "model", "data", "notebook", "answer", "stream", "value", "of", "a", "panel")


def messages(count: int = 500, seed: int = 5) -> list[Message]:
    """`count` messages, user and assistant in turn; the answers a line, paragraphs, lists
    or code (tall for their length), so no one height fits them all."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        marker = f"m{index}"
        if index % 2 == 0:
            out.append(
                Message.user(f"{marker} " + " ".join(rng.choices(WORDS, k=rng.randint(3, 30))))
            )
            continue
        kind = rng.random()
        if kind < 0.25:
            text = f"{marker} " + " ".join(rng.choices(WORDS, k=8))
        elif kind < 0.5:
            code = "\n".join(f"x{j} = {j}" for j in range(rng.randint(5, 40)))
            text = f"{marker} in code:\n\n```python\n{code}\n```"
        elif kind < 0.75:
            items = "\n".join(f"- {rng.choice(WORDS)}" for _ in range(rng.randint(3, 15)))
            text = f"{marker} a list:\n\n{items}"
        else:
            paragraphs = [
                " ".join(rng.choices(WORDS, k=rng.randint(40, 200)))
                for _ in range(rng.randint(1, 4))
            ]
            text = f"{marker} " + "\n\n".join(paragraphs)
        out.append(Message.assistant(text))
    return out
