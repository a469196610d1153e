"""@tool: schemas from signatures and docstrings, validated calls."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from agent_nb import Agent, Tool, tool


def test_schema_from_signature_and_docstring():
    @tool
    def search(query: str, limit: int = 5, kind: Literal["web", "news"] = "web") -> list[str]:
        """Search the web.

        Args:
            query: What to look for.
            limit: How many results
                at most.
        """
        return [query] * limit

    assert isinstance(search, Tool)
    assert search.name == "search" and search.description == "Search the web."
    params = search.parameters
    assert params["type"] == "object" and params["required"] == ["query"]
    assert params["properties"]["query"] == {"type": "string", "description": "What to look for."}
    assert params["properties"]["limit"]["description"] == "How many results at most."
    assert params["properties"]["kind"]["enum"] == ["web", "news"]
    assert params["additionalProperties"] is False
    assert search("x", limit=2) == ["x", "x"]  # still callable as the function


def test_tool_options_and_plain_functions():
    @tool(name="lookup", description="Find a thing.")
    def find(thing: str) -> str:
        return thing

    def plain(x: int) -> int:
        """Double x."""
        return 2 * x

    agent = Agent(provider="test", tools=[find, plain])
    assert [t.name for t in agent.tools] == ["lookup", "plain"]
    assert agent.tools[1].description == "Double x."


def test_invoke_validates_and_serializes():
    class Point(BaseModel):
        x: int

    @tool
    def make_point(x: int) -> Point:
        """Make a point."""
        return Point(x=x)

    assert asyncio.run(make_point.invoke({"x": "3"})) == '{"x":3}'
    with pytest.raises(ValidationError):
        asyncio.run(make_point.invoke({"x": "three"}))
    with pytest.raises(ValidationError):
        asyncio.run(make_point.invoke({"x": 1, "extra": 2}))


def test_bad_tools_are_refused_clearly():
    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs"):
        tool(name="splat")(lambda *args: None)
    with pytest.raises(ValueError, match="tool name"):
        tool(name="has space")(lambda: None)

    def twin() -> None:
        """A."""

    with pytest.raises(ValueError, match="two tools are named 'twin'"):
        Agent(provider="test", tools=[twin, twin])


def test_output_description_comes_from_the_docstring():
    from agent_nb._output import OutputType

    class Book(BaseModel):
        """A book with a rating."""

        title: str
        rating: int = 0

    output = OutputType(Book)
    assert output.request.description == "A book with a rating."
    assert output.request.schema["required"] == ["title", "rating"]
    assert OutputType(list[int]).parse('{"value": [1, 2]}') == [1, 2]
