"""The next turn's prompt prefix, when it will not extend this turn's: prepared ahead.

The prompt builder keeps a conversation's prefix stable and drops old history by whole
chunks (bot/prompt_builder.py); the turn where the window moves changes the prompt right
after the system part, so the local model reads the whole kept history again — on the
CPU, ~2,000 tokens, half a minute before Ludo's next first word. Which turn that is can
be known as soon as this turn is answered: the next turn's history is this one's plus
this exchange, and the window depends only on the history, not on the coming message.
So when it moves, the new prefix (system part and kept history, without any message)
is handed to the extractor, which reads it into the server's cache as hot background
work (bot/extractor.py, llm/gate.py's HOT): preempted by anyone who writes, done while
nobody waits.
"""

from __future__ import annotations

from dataclasses import replace

from bot import prompt_builder
from bot.prompt_builder import BuiltPrompt, ContextInputs
from llm.types import ChatMessage


def next_prefix(inputs: ContextInputs, built: BuiltPrompt, reply: str
                ) -> list[ChatMessage] | None:
    """The next turn's messages but its last (None: the next prompt extends this one, or
    the window cannot be foreseen). `inputs`/`built`: this turn's; `reply`: the reply as
    the history will hold it."""
    history = [*inputs.history,
               prompt_builder.Turn("user", built.messages[-1]["content"]),
               prompt_builder.Turn("assistant", reply)]
    try:
        following = prompt_builder.build_prompt(replace(
            inputs, history=history, message="", recalled=(), relevant_facts=()))
    except prompt_builder.ContextError:
        return None
    if following.history_start == built.history_start:
        return None
    return [ChatMessage(m["role"], m["content"])  # type: ignore[arg-type]
            for m in following.messages[:-1]]
