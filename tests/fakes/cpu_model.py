"""The pure part of the CPU Ollama model (tests/fakes/cpu_ollama.py): tokens, the chat
template, Ollama's context fitting, per-slot KV prefix caches, and what is recorded.

Nothing here does I/O or reads a clock, so it can be checked on its own and reused by a
benchmark that only wants to count what a conversation would cost.

Tokens are strings, not ids: `tokenize` cuts text into words of at most 4 letters (with
their leading space, like SentencePiece's "▁"), punctuation marks and whitespace runs, and
keeps the template's control tokens whole. About 1 token per 3–4 characters of French, and
`"".join(tokenize(t)) == t`. The template is rendered segment by segment (each message is
tokenized on its own), so two prompts sharing their first messages share a token prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

Msg = tuple[str, str]  # (role, content)

SPECIAL = ("<s>", "</s>", "[INST]", "[/INST]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")
_TOKEN = re.compile("|".join(re.escape(s) for s in SPECIAL) + r"| ?\w{1,4}| ?[^\w\s]|\s+")
_REPLY_WORDS = ("Oui", "je", "vois", "la", "mais", "dans", "ce", "cas", "il", "faut",
                "voir", "avec", "vous", "le", "bien", "ici")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def collate(messages: Sequence[Msg]) -> tuple[str, list[Msg]]:
    """As Ollama's template engine: all system contents joined become `.System`, and
    consecutive messages of one role are merged (system messages stay in the list)."""
    system = [content for role, content in messages if role == "system"]
    merged: list[Msg] = []
    for role, content in messages:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + content)
        else:
            merged.append((role, content))
    return "\n\n".join(system), merged


def render(messages: Sequence[Msg], *, system_last: bool = True) -> list[str]:
    """The prompt's tokens through Mistral's template.

    `system_last=True` is the template Ollama ships with `mistral` (v0.3): the system
    prompt goes into the LAST message, if that is a user message, so it moves every turn:
    `<s>[INST] u1[/INST] a1</s>[INST] system\\n\\nu2[/INST]`. `system_last=False` puts it
    into the first user message (`<s>[INST] system\\n\\nu1[/INST] a1</s>[INST] u2[/INST]`),
    as many other templates do; then a whole conversation is a stable prefix.
    """
    system, msgs = collate(messages)
    users = [i for i, (role, _) in enumerate(msgs) if role == "user"]
    with_system = len(msgs) - 1 if system_last else (users[0] if users else -1)
    tokens = ["<s>"]
    for i, (role, content) in enumerate(msgs):
        if role == "user":
            head = f"{system}\n\n" if system and i == with_system else ""
            tokens += ["[INST]", *tokenize(" " + head + content), "[/INST]"]
        elif role == "assistant":
            tokens += [*tokenize(" " + content), "</s>"]
        elif role == "tool":
            body = ' {"content": ' + json.dumps(content, ensure_ascii=False) + "}"
            tokens += ["[TOOL_RESULTS]", *tokenize(body), "[/TOOL_RESULTS]"]
    return tokens


def fit_messages(messages: Sequence[Msg], num_ctx: int, *, system_last: bool = True) -> list[Msg]:
    """Ollama's chatPrompt: keep the last message, then older ones while the rendered
    prompt fits in num_ctx; system messages are always kept (moved to the front)."""
    n = len(messages) - 1
    for i in range(n - 1, -1, -1):
        kept = [m for m in messages[:i] if m[0] == "system"] + list(messages[i:])
        if len(render(kept, system_last=system_last)) > num_ctx:
            break
        n = i
    return [m for m in messages[:n] if m[0] == "system"] + list(messages[n:])


def truncate(tokens: list[str], num_ctx: int, num_keep: int) -> list[str]:
    """The runner's cut of a prompt still longer than num_ctx: keep the first num_keep
    tokens and the end."""
    if len(tokens) <= num_ctx:
        return tokens
    keep = max(0, min(num_keep, num_ctx - 1))
    return tokens[:keep] + tokens[len(tokens) - (num_ctx - keep):]


def default_reply(n_tokens: int) -> str:
    """A French-looking reply whose generated tokens (`tokenize(" " + reply)`) number
    exactly n_tokens: short words, then a final period."""
    if n_tokens <= 0:
        return ""
    words = [_REPLY_WORDS[i % len(_REPLY_WORDS)] for i in range(n_tokens - 1)]
    return " ".join(words) + "." if words else "."


@dataclass
class CpuConfig:
    """What the simulated server is (defaults: Mistral 7B Q4 on a 13th-gen i9, no GPU)."""

    prompt_rate: float = 60.0  # prompt tokens evaluated per second
    gen_rate: float = 9.0  # tokens generated per second
    embed_rate: float = 1000.0  # tokens per second of /api/embed (a small model)
    num_parallel: int = 1  # slots per loaded model (OLLAMA_NUM_PARALLEL)
    slot_policy: str = "ollama"  # "ollama", "ollama-multiuser" or "llama-server": choose_slot
    ram_cache_tokens: int | None = None  # llama-server's RAM prompt cache; None: num_ctx * slots
    slot_similarity: float = 0.1  # llama-server's --slot-prompt-similarity
    load_s: float = 3.0  # loading a chat model (its caches start empty)
    embed_load_s: float = 0.5
    max_loaded_models: int = 3  # OLLAMA_MAX_LOADED_MODELS (3 on a CPU)
    default_keep_alive_s: float = 300.0  # OLLAMA_KEEP_ALIVE; a negative value: forever
    default_num_ctx: int = 4096
    default_num_keep: int = 4
    system_last: bool = True  # Ollama's mistral template (see render)
    context_shift: bool = True  # else generation stops at num_ctx, done_reason "length"
    count_cached: bool = True  # prompt_eval_count includes the cached tokens
    report_cached: bool = True  # send prompt_eval_cached_count
    reply_tokens: int = 40  # length of the default reply
    time_scale: float = 0.01  # wall seconds per simulated second


@dataclass
class Slot:
    """One of OLLAMA_NUM_PARALLEL sequences of a loaded model, with its KV cache."""

    index: int
    tokens: list[str] = field(default_factory=list)
    last_used: int = 0
    free_at: float = 0.0  # simulated end of its last request


@dataclass
class PromptCache:
    """llama-server's host-RAM prompt cache (llama.cpp#16391): prompts a slot held before
    it was reused, oldest dropped beyond `max_tokens`; a slot can be swapped back in."""

    max_tokens: int
    entries: list[list[str]] = field(default_factory=list)

    def save(self, tokens: list[str]) -> None:
        if not tokens or tokens in self.entries:
            return
        self.entries.append(list(tokens))
        while self.entries and sum(map(len, self.entries)) > self.max_tokens:
            self.entries.pop(0)

    def best(self, tokens: Sequence[str]) -> tuple[int, list[str]]:
        scored = [(common_prefix(entry, tokens), entry) for entry in self.entries]
        return max(scored, key=lambda pair: pair[0], default=(0, []))


def choose_slot(cfg: CpuConfig, slots: Sequence[Slot], free: Sequence[Slot],
                tokens: Sequence[str], ram: PromptCache | None) -> Slot:
    """The free slot a prompt lands on, as the server picks it (it may rewrite the slot's
    cache first: a fork, or a swap from RAM).

    "ollama" (Ollama < 0.30's runner, findLongestCacheSlot): the free slot sharing the
    longest prefix, the first on ties. Every prompt starts with `<s>[INST]`, so an empty
    slot loses to any used one: sequential conversations evict each other even with
    several slots; the extra slots only serve concurrent requests.
    "ollama-multiuser" (OLLAMA_MULTIUSER_CACHE=1, findBestCacheSlot): a free slot whose
    whole content prefixes the prompt; else the least recently used free slot, into which
    the longest common prefix held by any slot is first copied.
    "llama-server" (Ollama >= 0.30 runs GGUF models on llama.cpp's server): the free slot
    with the best share of the prompt in common above `slot_similarity`, else the least
    recently used; a slot about to lose more than half of its content is saved to the RAM
    prompt cache, and the best cached prompt is swapped in if it beats the slot's own.
    """
    ordered = sorted(free, key=lambda s: s.index)
    if cfg.slot_policy == "ollama":
        return max(ordered, key=lambda s: common_prefix(s.tokens, tokens))
    lru = min(ordered, key=lambda s: s.last_used)
    if cfg.slot_policy == "ollama-multiuser":
        best = max(slots, key=lambda s: common_prefix(s.tokens, tokens))
        n = common_prefix(best.tokens, tokens)
        if n == len(best.tokens) and best in free:
            return best
        if n > 0 and best is not lru:
            lru.tokens = best.tokens[:n]
        return lru
    if cfg.slot_policy != "llama-server":
        raise ValueError(f"unknown slot_policy {cfg.slot_policy!r}")
    scored = [(common_prefix(s.tokens, tokens) / max(len(tokens), 1), s)
              for s in ordered if s.tokens]
    sim, chosen = max(scored, key=lambda pair: pair[0], default=(0.0, lru))
    if sim <= cfg.slot_similarity:
        chosen, save = lru, True
    else:
        save = sim * len(tokens) / len(chosen.tokens) < 0.5
    if save and ram is not None and chosen.tokens:
        ram.save(chosen.tokens)
        n, entry = ram.best(tokens)
        if n > common_prefix(chosen.tokens, tokens):
            chosen.tokens = list(entry)
    return chosen


@dataclass
class Computing:
    """A request evaluating its prompt or generating right now, as the CPU sees it."""

    model: str
    chunk: int = 0  # prompt tokens left in its current batch; 0: generating, a token a step
    speed: float = 1.0  # the model's speed relative to CpuConfig's rates (a small model: > 1)


SHARING = ("roofline", "processor")


def step_rates(computing: Sequence[Computing], cfg: CpuConfig,
               sharing: str = "roofline") -> list[float]:
    """How many tokens per second each computing request advances (prompt tokens while
    it evaluates its prompt, generated tokens after), everything else computing too.

    "processor": the CPU shared equally, no batching gain: n requests each go at 1/n of
    their rate alone (conservative for slots of one model, about right for two models).
    "roofline": how llama.cpp runs the slots of ONE loaded model — each step is one
    decode of a batch holding every active slot's tokens (a generating slot's one token,
    an evaluating slot's next prompt batch of up to num_batch): Ollama's runner fills
    one batch "as much as possible across all sequences" and calls Decode once
    (runner/llamarunner/runner.go, processBatch), llama-server adds "sampled tokens from
    any ongoing sequences" then "any pending prompts without exceeding n_batch" to the
    same batch (tools/server, update_slots, continuous batching on by default). On a
    CPU a decode step reads all the weights once whatever the batch (generation is
    memory-bandwidth bound: 1/gen_rate per step) and computes every token in it (prompt
    evaluation is compute bound: tokens/prompt_rate), so a step of k tokens takes
    max(1/gen_rate, k/prompt_rate): two generating slots each keep ~gen_rate (llama.cpp#4064:
    on an x86 CPU, 4/8/16 t/s in all at batch 1/2/4), a prompt evaluated beside a
    generation costs what it costs alone (the generated token rides along, one a step,
    so that generation stalls meanwhile), two prompts share the compute. Models loaded
    separately run their own decodes: they share the CPU as "processor" does.
    """
    if sharing == "processor":
        n = max(len(computing), 1)
        return [(cfg.prompt_rate if c.chunk else cfg.gen_rate) * c.speed / n
                for c in computing]
    if sharing != "roofline":
        raise ValueError(f"unknown sharing {sharing!r}: one of {SHARING}")
    models = {c.model for c in computing}
    step: dict[str, float] = {}
    for model in models:
        mine = [c for c in computing if c.model == model]
        speed = mine[0].speed
        k = sum(c.chunk if c.chunk else 1 for c in mine)
        step[model] = max(1.0 / (cfg.gen_rate * speed),
                          k / (cfg.prompt_rate * speed)) * len(models)
    return [(c.chunk or 1) / step[c.model] for c in computing]


def cached_prefix(slot: Slot, tokens: Sequence[str]) -> int:
    """How much of the prompt the slot's cache serves: at least one token is always
    evaluated (the model needs the logits of the last one), as in Ollama."""
    return min(common_prefix(slot.tokens, tokens), max(len(tokens) - 1, 0))


@dataclass
class RequestRecord:
    """One request as the server lived it. Times are simulated seconds; `arrival_s` counts
    from the server's (re)set."""

    index: int
    kind: str  # "chat", "generate", "embed", or "load" (a chat without messages)
    model: str
    num_ctx: int
    stream: bool
    arrival_s: float
    slot: int | None = None
    loaded: bool = False  # this request (re)loaded the model
    load_s: float = 0.0  # its own load time
    load_duration_s: float = 0.0  # arrival until the model was ready (Ollama's load_duration)
    queue_s: float = 0.0  # waiting (scheduler and slot), its own load excluded
    prompt_tokens: int = 0  # after fitting/truncation to num_ctx
    cached_tokens: int = 0
    evaluated_tokens: int = 0
    truncated: bool = False  # messages dropped or tokens cut to fit num_ctx
    prompt_eval_s: float = 0.0
    eval_tokens: int = 0
    eval_s: float = 0.0
    done_reason: str | None = None
    finished_s: float | None = None  # None: still running, or the client went away

    @property
    def ttft_s(self) -> float:
        """Arrival to first token."""
        return self.queue_s + self.load_s + self.prompt_eval_s

    @property
    def total_s(self) -> float:
        return self.ttft_s + self.eval_s


@dataclass(frozen=True)
class CpuStats:
    records: list[RequestRecord]
    requests: int
    prompt_tokens: int
    cached_tokens: int
    evaluated_tokens: int
    eval_tokens: int
    loads: int
    max_queue_s: float
    mean_ttft_s: float

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @classmethod
    def of(cls, records: Sequence[RequestRecord]) -> CpuStats:
        done = [r for r in records if r.finished_s is not None]
        return cls(
            records=list(records), requests=len(records),
            prompt_tokens=sum(r.prompt_tokens for r in done),
            cached_tokens=sum(r.cached_tokens for r in done),
            evaluated_tokens=sum(r.evaluated_tokens for r in done),
            eval_tokens=sum(r.eval_tokens for r in done),
            loads=sum(r.loaded for r in records),
            max_queue_s=max((r.queue_s for r in done), default=0.0),
            mean_ttft_s=sum(r.ttft_s for r in done) / len(done) if done else 0.0,
        )

    def summary(self) -> str:
        lines = [f"{self.requests} requests, {self.prompt_tokens} prompt tokens "
                 f"({self.cached_share:.0%} cached), {self.eval_tokens} generated, "
                 f"{self.loads} loads, max queue {self.max_queue_s:.1f} s, "
                 f"mean ttft {self.mean_ttft_s:.1f} s"]
        for r in self.records:
            lines.append(
                f"#{r.index} {r.kind:<5} t={r.arrival_s:8.1f} slot={r.slot} "
                f"queue={r.queue_s:6.1f} load={r.load_s:4.1f} prompt={r.prompt_tokens} "
                f"(cached {r.cached_tokens}) eval={r.eval_tokens} "
                f"ttft={r.ttft_s:6.1f} total={r.total_s:6.1f} {r.done_reason or '-'}")
        return "\n".join(lines)
