"""A tiny llama model written with the `gguf` package: random weights, our own vocabulary.

Nothing is downloaded. The vocabulary is GPT-2's byte-level BPE (every byte has a token, so any
text tokenizes), a few merges, and ChatML's control tokens; the chat template (Jinja, in
`tokenizer.chat_template`) renders system, user, assistant (with tool calls) and tool messages
the way real templates do, concatenating `message['content']` as a string.

The answers are gibberish, but printable: the residual stream's first dimension is a constant
that no layer writes to, so after the final norm it is always positive, and the output rows of
the tokens the model must never say (control tokens, other control characters, bytes that are
not ASCII) weigh it strongly negative. The model therefore never ends an answer by itself
(every answer runs to `max_tokens`, or to a `stop` string) and never writes broken UTF-8.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
CONTEXT_LENGTH = 4096

CONTROL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_MERGES = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("e", "r"), ("Ġt", "he"), ("o", "n"), ("a", "n")]

CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- elif message['role'] == 'assistant' %}
{{- '<|im_start|>assistant\\n' + message['content'] }}
{%- for call in message['tool_calls'] or [] %}
{{- '\\n<tool_call>\\n' + (call['function'] | tojson) + '\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message['role'] == 'tool' %}
{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] }}
{{- '\\n</tool_response><|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def vocabulary() -> tuple[list[str], list[int], list[str], set[int]]:
    """(tokens, token types, merges, the ids the model must never say)."""
    alphabet = _bytes_to_unicode()
    tokens = [alphabet[byte] for byte in range(256)]
    banned = {b for b in range(256) if not (0x20 <= b < 0x7F or b == ord("\n"))}
    merges = []
    for left, right in _MERGES:
        merges.append(f"{left} {right}")
        tokens.append(left + right)
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for name in CONTROL_TOKENS:
        banned.add(len(tokens))
        tokens.append(name)
        types.append(gguf.TokenType.CONTROL)
    return tokens, types, merges, banned


def write_model(path: Path, seed: int = 0) -> Path:
    """Write the model to `path` (a .gguf file, under a megabyte) and return it."""
    rng = np.random.default_rng(seed)
    tokens, types, merges, banned = vocabulary()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("agent_nb tiny test model")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def normal(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    embedding = normal(n_vocab, N_EMBD, scale=1.0)
    embedding[:, 0] = 4.0  # the constant dimension (see the module's docstring)
    writer.add_tensor("token_embd.weight", embedding)
    ones = np.ones(N_EMBD, dtype=np.float32)
    for layer in range(N_LAYER):
        block = f"blk.{layer}."
        attn_out = normal(N_EMBD, N_EMBD, scale=0.1)
        ffn_down = normal(N_EMBD, N_FF, scale=0.1)
        attn_out[0] = ffn_down[0] = 0.0  # nothing writes to the constant dimension
        writer.add_tensor(block + "attn_norm.weight", ones)
        writer.add_tensor(block + "attn_q.weight", normal(N_EMBD, N_EMBD, scale=0.2))
        writer.add_tensor(block + "attn_k.weight", normal(N_HEAD_KV * head_dim, N_EMBD, scale=0.2))
        writer.add_tensor(block + "attn_v.weight", normal(N_HEAD_KV * head_dim, N_EMBD, scale=0.2))
        writer.add_tensor(block + "attn_output.weight", attn_out)
        writer.add_tensor(block + "ffn_norm.weight", ones)
        writer.add_tensor(block + "ffn_gate.weight", normal(N_FF, N_EMBD, scale=0.2))
        writer.add_tensor(block + "ffn_up.weight", normal(N_FF, N_EMBD, scale=0.2))
        writer.add_tensor(block + "ffn_down.weight", ffn_down)
    writer.add_tensor("output_norm.weight", ones)
    output = normal(n_vocab, N_EMBD, scale=0.5)
    output[:, 0] = 0.0
    for token in banned:
        output[token] = 0.0
        output[token, 0] = -40.0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
