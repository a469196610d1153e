"""The notebook's data in a prompt (a DataFrame as a colleague would want it), and an
answer's code taken back into the notebook as a new cell."""

from __future__ import annotations

import pytest
from fake_openai import Reply
from kernels import chat_kernel

pytest.importorskip("pandas")
pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]


def sent(server) -> str:
    return server.requests[-1]["messages"][-1]["content"]


def test_a_dataframe_is_sent_as_shape_dtypes_and_a_capped_head(server):
    with chat_kernel(server) as kernel:
        kernel.execute(
            "import pandas as pd\n"
            "df = pd.DataFrame({'a': range(100_000), 'b': ['x' * 50] * 100_000})\n"
            "wide = pd.DataFrame({f'column_{i:03}': ['y' * 60] * 10 for i in range(100)})"
        )
        ran = kernel.execute("%%chat\nWhat is in {df}? And {df.shape}")
        assert ran.error is None
        text = sent(server)
        assert text.startswith(
            "What is in pandas DataFrame, 100,000 rows × 2 columns\ndtypes: a int64, b "
        )
        assert "first 5 rows:\n" in text and "99999" not in text and len(text) < 1_000
        assert text.endswith("? And (100000, 2)")
        kernel.execute("%%chat\n{wide}")
        text = sent(server)
        assert "10 rows × 100 columns" in text and ", and 70 more\n" in text
        assert text.endswith("[table cut at 2,000 characters]") and len(text) < 5_000


def test_polars_frames_lazy_frames_and_series_are_summarized_too(server):
    pytest.importorskip("polars")
    with chat_kernel(server) as kernel:
        kernel.execute(
            "import pandas as pd, polars as pl\n"
            "big = pl.DataFrame({'a': range(100_000), 'b': ['x' * 50] * 100_000})\n"
            "collected = []\n"
            "def spy(frame):\n    collected.append(len(frame))\n    return frame\n"
            "lazy = big.lazy().map_batches(spy)\n"
            "wide = pl.DataFrame({f'column_{i:03}': ['y' * 60] * 10 for i in range(100)})\n"
            "s = pd.Series(range(100_000), name='n')\nunnamed = pl.Series(['p', 'q'])"
        )
        assert kernel.execute("%%chat\n{big}").error is None
        text = sent(server)
        assert text.startswith(
            "polars DataFrame, 100,000 rows × 2 columns\ndtypes: a Int64, b String\n"
            "first 5 rows:\n| a | b "
        )
        assert "| 4 | xxxx" in text and "| 5 |" not in text and len(text) < 1_000
        assert kernel.execute("%%chat\nWhat is {lazy}?").error is None
        assert sent(server) == (
            "What is polars LazyFrame, 2 columns (lazy: not collected, so its rows are not "
            "known)\ndtypes: a Int64, b String?"
        )
        assert kernel.execute("print(collected)").stdout == "[]\n"  # never collected
        kernel.execute("%%chat\n{wide}")
        text = sent(server)
        assert "10 rows × 100 columns" in text and ", and 70 more\n" in text
        assert len(text) < 5_000
        kernel.execute("%%chat\n{s} and {unnamed}")
        text = sent(server)
        assert text.startswith("pandas Series 'n', 100,000 rows, dtype int64\nfirst 5 values:\n")
        assert "99999" not in text
        assert text.endswith(
            " and polars Series (no name), 2 rows, dtype String\nfirst 2 values:\n"
            "|   |\n|---|\n| p |\n| q |"
        )


def test_a_value_that_cannot_be_shown_is_a_clear_error_and_nothing_is_sent(server):
    with chat_kernel(server) as kernel:
        kernel.execute("class Bad:\n    def __str__(self):\n        raise ValueError('boom')")
        kernel.execute("b = Bad()")
        before = len(server.requests)
        failed = kernel.execute("%%chat\nLook at {b}")
        assert failed.error["ename"] == "ChatError"
        assert failed.error["evalue"] == (
            "{b} cannot be put in the message: showing it raised ValueError: boom; nothing "
            "was sent (--raw sends the cell as typed)"
        )
        assert len(server.requests) == before
        assert kernel.execute("%session history").shown == "no messages yet in session 'main'"


def test_insert_puts_the_last_answers_python_code_in_a_new_cell_unrun(server):
    server.script(
        Reply(
            text="Try this:\n\n```python\nanswer = 42\nprint(answer)\n```\n\n"
            "```bash\nrm -rf /\n```\n\nand\n\n```py\nanswer += 1\n```"
        )
    )
    with chat_kernel(server) as kernel:
        empty = kernel.execute("%session insert")
        assert "has no answer yet" in empty.error["evalue"]
        kernel.execute("%%chat\nshow me code")
        inserted = kernel.execute("%session insert")
        assert inserted.error is None
        payloads = inserted.reply["payload"]
        assert payloads == [
            {
                "source": "set_next_input",
                "text": "answer = 42\nprint(answer)\n\nanswer += 1",
                "replace": False,
            }
        ]
        assert "(4 lines) is in a new cell below; it has not run" in inserted.stdout
        assert "NameError" in kernel.execute("answer").error["ename"]  # nothing ran
        server.script(Reply(text="No code here."))
        kernel.execute("%%chat\nand now?")
        none = kernel.execute("%session insert")
        assert "no Python code block" in none.error["evalue"]
