#!/usr/bin/env python3
"""Oracle for koalascope's chat templates: FastChat's own conversation templates.

Writes fixtures/chat/templates.json: for each case, the messages and the prompt string that
FastChat's Conversation.get_prompt() builds (FastChat omits the leading BOS, which its
tokenizer adds; koalascope's ks_chat_render writes it as "<s>", and the test strips it).

Regenerate (needs network access to PyPI once):
    /usr/bin/python3 -m venv --system-site-packages .venv-chat
    .venv-chat/bin/pip install --no-deps fschat==0.2.36
    .venv-chat/bin/python tests/reference/make_chat_fixtures.py
Alpaca is not taken from FastChat: FastChat's "alpaca" template differs from the format the
Stanford Alpaca models were trained on, which koalascope follows; its cases are written out
from the Stanford Alpaca prompt format (PROMPT_DICT["prompt_no_input"]) below.
"""
import json
import os

import fastchat
from fastchat.conversation import get_conv_template

assert fastchat.__version__ == "0.2.36", fastchat.__version__

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "chat", "templates.json")

CONVERSATIONS = [
    [("user", "Hi there")],
    [("user", "Hi there"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")],
    [("system", "You are a terse assistant."), ("user", "What is 2+2?")],
    [("system", "Be kind."), ("user", "One"), ("assistant", "Two"), ("user", "Three")],
    [("user", "A user who types </s> and <s> gets them as text")],
    [("user", "  leading spaces\nand a newline ")],
]

FASTCHAT = {"koala": "koala_v1", "vicuna": "vicuna_v1.1", "llama2": "llama-2"}


def fastchat_prompt(template, conv):
    c = get_conv_template(template)
    for role, text in conv:
        if role == "system":
            c.set_system_message(text)
        else:
            c.append_message(c.roles[0] if role == "user" else c.roles[1], text)
    c.append_message(c.roles[1], None)
    return c.get_prompt()


ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")


def alpaca_prompt(conv):
    out = ""
    msgs = list(conv)
    system = msgs.pop(0)[1] if msgs[0][0] == "system" else ALPACA_PREAMBLE
    out += system
    for role, text in msgs:
        if role == "user":
            out += "\n\n### Instruction:\n" + text
        else:
            out += "\n\n### Response:" + text + "</s>"
    return out + "\n\n### Response:"


cases = []
for name, fc in FASTCHAT.items():
    for conv in CONVERSATIONS:
        if name == "koala" and conv[0][0] == "system":
            continue  # Koala's "system" is its fixed conversation opener
        cases.append({"template": name,
                      "messages": [{"role": r, "content": t} for r, t in conv],
                      "expected": fastchat_prompt(fc, conv)})
for conv in CONVERSATIONS:
    cases.append({"template": "alpaca", "messages": [{"role": r, "content": t} for r, t in conv],
                  "expected": alpaca_prompt(conv)})

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w", encoding="utf-8") as f:
    json.dump({"oracle": "fschat==0.2.36 Conversation.get_prompt (alpaca: Stanford format)",
               "cases": cases}, f, indent=1, ensure_ascii=False)
print(f"wrote {len(cases)} cases to {OUT}")
