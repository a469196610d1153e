"""The notebook's data in a prompt (a DataFrame as a colleague would want it), and an
answer's code taken back into the notebook as a new cell."""

from __future__ import annotations

import pytest
from fake_openai import Reply
from kernels import chat_kernel

pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(180)


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
