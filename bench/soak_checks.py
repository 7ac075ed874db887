"""The soak's verdicts (bench/soak.py), as pure functions over what it sent, what the people
saw, and what the database and the cloud received. No I/O, no clock: each check is tested
on tiny inputs (tests/bench/test_soak_checks.py), including inputs that must fail it.

The soak marks every message it sends with a token (`QREF-xxxxxx`); the simulated models
answer with the same token (`RREF-xxxxxx`), so a reply is attributed to its message
wherever it shows up (a Telegram message, a mail, an HTTP response, Axis's mailbox).
Content that must stay on the server (a never-cloud person's words, a local-only message)
carries a secret (`SECRET-xxxxxx`) that must never appear in what reaches the cloud.

What a person expects of a message (`Sent.expect`):
- `reply`: exactly one answer from the model, visible on the message's channel;
- `stranger`: an unknown Telegram sender gets one polite notice (to their first message)
  and nothing else, ever (`Seen.kind == "stranger_notice"`, counted per conversation);
- `held`: a mail our server did not vouch for is stored and held for Ludo, never answered;
- `relay`: a site contact form is relayed to the agency's mailbox exactly once.

"Lost" and "duplicated" are judged where the person looks. A client that could not tell
whether a request was taken (its connection cut by a SIGKILL) and sent it again makes the
message stored twice (`Stored` rows sharing a token): replies to both are then the
client's doing, counted apart (`client_resends`), not Axi's duplicates. A mail sent again
with the same Message-ID (the one reply whose SMTP send completed just before a kill) is one
message to its reader (`Seen.key`), counted in `same_key_repeats`.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

TOKEN = re.compile(r"QREF-([0-9a-f]{6})")
REPLY_TOKEN = re.compile(r"RREF-([0-9a-f]{6})")
SECRET = re.compile(r"SECRET-[0-9a-f]{6}")
DPE_NUMBER = re.compile(r"N° DPE : (\S+)")

Expect = Literal["reply", "stranger", "held", "relay"]
SeenKind = Literal["reply", "draft", "notice", "stranger_notice", "relay"]
LIVE_CHANNELS = ("telegram", "web", "site", "axis")


@dataclass(frozen=True)
class Sent:
    """One message a person sent (its first attempt)."""

    token: str
    person: str
    channel: str  # telegram, email, web, site, contact, axis
    conversation: str  # as the person sees it: one chat, one mailbox, one API client…
    expect: Expect
    at: float  # monotonic seconds
    seq: int = 0  # its place in the plan (ties of `at`)
    secret: str | None = None
    attempts: int = 1  # a request sent again after a cut counts its attempts here


@dataclass(frozen=True)
class Seen:
    """Something a person saw: one message on their channel (a repeat of the same `key`,
    e.g. a mail sent again with its Message-ID, is the same message)."""

    channel: str
    conversation: str
    kind: SeenKind
    at: float  # monotonic seconds: when it became visible
    key: str
    token: str | None = None


@dataclass(frozen=True)
class Stored:
    """An inbound row in Axi's database (or a stored contact request)."""

    id: int
    channel: str
    token: str | None
    state: str  # en_attente, traite, ignore, retenu, abandonne… (contacts: relaye, a_relayer)
    replies: int  # outbound rows of kind "reply" answering it
    tries: int = 1  # times a worker handled it (more: it waited for a model, or was cut)
    send_tries: int = 1  # times its reply's sending was tried (more: the channel failed)


@dataclass(frozen=True)
class DigestMail:
    """A veille digest as it reached the SMTP server."""

    key: str  # its Message-ID
    recipients: tuple[str, ...]
    items: tuple[str, ...]  # the DPE numbers it lists


def tokens_in(text: str, pattern: re.Pattern[str] = TOKEN) -> list[str]:
    return pattern.findall(text or "")


def dpe_numbers(text: str) -> list[str]:
    return DPE_NUMBER.findall(text or "")


# ---------------------------------------------------------------------- the checks
@dataclass(frozen=True)
class Delivery:
    """Per message: the distinct visible replies and the rows stored for it."""

    token: str
    replies: int  # distinct visible replies (by key)
    stored: int  # inbound rows carrying its token
    first_visible: float | None


def deliveries(sent: Sequence[Sent], seen: Sequence[Seen], stored: Sequence[Stored]
               ) -> dict[str, Delivery]:
    reply_keys: dict[str, set[str]] = defaultdict(set)
    first: dict[str, float] = {}
    for s in seen:
        if s.token is None or s.kind not in ("reply", "draft", "relay"):
            continue
        if s.kind != "draft":
            reply_keys[s.token].add(s.key)
        first[s.token] = min(first.get(s.token, math.inf), s.at)
    rows = Counter(r.token for r in stored if r.token)
    return {m.token: Delivery(m.token, len(reply_keys.get(m.token, ())), rows[m.token],
                              first.get(m.token)) for m in sent}


def lost(sent: Sequence[Sent], seen: Sequence[Seen], stored: Sequence[Stored]) -> list[str]:
    """Messages whose expected outcome never came: a reply or a relay nobody saw, a held
    mail that was never stored, a stranger who never got the one polite notice (named by
    their conversation), and stored rows a reply was expected for that stayed unanswered."""
    found = deliveries(sent, seen, stored)
    by_token = {r.token: r for r in stored if r.token}
    out: list[str] = []
    for m in sent:
        d = found[m.token]
        if m.expect in ("reply", "relay") and d.replies == 0:
            out.append(m.token)
        elif m.expect == "held" and m.token not in by_token:
            out.append(m.token)
    expected_rows = {m.token for m in sent if m.expect == "reply"}
    for row in stored:
        if row.token in expected_rows and row.replies == 0 and row.token not in out:
            out.append(row.token)  # stored, never answered (or answered by a notice only)
    for conversation in _stranger_conversations(sent):
        if _stranger_notices(seen, conversation) == 0:
            out.append(conversation)
    return out


def duplicated(sent: Sequence[Sent], seen: Sequence[Seen], stored: Sequence[Stored]
               ) -> list[str]:
    """Messages a person saw answered more often than they were stored (one visible reply
    per stored row at most), rows answered twice in the database, and strangers told the
    polite notice more than once."""
    found = deliveries(sent, seen, stored)
    out = [m.token for m in sent if m.expect in ("reply", "relay")
           and found[m.token].replies > max(found[m.token].stored, 1)]
    doubled = {r.token for r in stored if r.replies > 1 and r.token}
    out += sorted(t for t in doubled if t not in out)
    for conversation in _stranger_conversations(sent):
        if _stranger_notices(seen, conversation) > 1:
            out.append(conversation)
    return out


def client_resends(sent: Sequence[Sent], stored: Sequence[Stored]) -> list[str]:
    """Messages stored more than once because their client sent them again after a cut."""
    rows = Counter(r.token for r in stored if r.token)
    return [m.token for m in sent if rows[m.token] > 1]


def same_key_repeats(seen: Sequence[Seen]) -> int:
    """Visible messages that arrived more than once with the same identity (a mail sent
    again with its Message-ID): one message to the reader, counted here for the record."""
    counts = Counter((s.channel, s.key) for s in seen if s.kind != "draft")
    return sum(n - 1 for n in counts.values() if n > 1)


def unexpected_answers(sent: Sequence[Sent], seen: Sequence[Seen], stored: Sequence[Stored]
                       ) -> list[str]:
    """Messages that must not get a model's answer (a stranger beyond the polite notice, a
    held mail) but got one, seen or stored."""
    silent = {m.token for m in sent if m.expect in ("stranger", "held")}
    out = {s.token for s in seen if s.token in silent and s.kind in ("reply", "draft")}
    out |= {r.token for r in stored if r.token in silent and r.replies > 0}
    return sorted(t for t in out if t is not None)


def order_violations(sent: Sequence[Sent], seen: Sequence[Seen]) -> list[tuple[str, str]]:
    """Per conversation, the replies that came before the reply to a message sent earlier
    in that conversation: (conversation, token of the reply that overtook)."""
    first_reply: dict[str, float] = {}
    for s in seen:
        if s.kind == "reply" and s.token is not None:
            first_reply[s.token] = min(first_reply.get(s.token, math.inf), s.at)
    by_conversation: dict[str, list[Sent]] = defaultdict(list)
    for m in sent:
        if m.expect == "reply" and m.token in first_reply:
            by_conversation[m.conversation].append(m)
    out: list[tuple[str, str]] = []
    for conversation, messages in sorted(by_conversation.items()):
        latest = -math.inf
        for m in sorted(messages, key=lambda m: (m.at, m.seq)):
            at = first_reply[m.token]
            if at < latest:
                out.append((conversation, m.token))
            latest = max(latest, at)
    return out


def leaks(secrets: Iterable[str], cloud_texts: Iterable[str]) -> dict[str, int]:
    """Secret → how many texts that reached the cloud hold it (only secrets found)."""
    wanted = set(secrets)
    found: Counter[str] = Counter()
    for text in cloud_texts:
        for secret in set(SECRET.findall(text or "")) & wanted:
            found[secret] += 1
    return dict(found)


@dataclass(frozen=True)
class DigestVerdict:
    items: int
    recipients: int
    twice: list[tuple[str, str]]  # (recipient, item)
    never: list[tuple[str, str]]


def digest_check(items: Iterable[str], mails: Sequence[DigestMail],
                 recipients: Iterable[str]) -> DigestVerdict:
    """Each stored veille item in exactly one delivered digest per recipient (a digest
    that reached the server twice with the same Message-ID counts once)."""
    wanted = sorted(set(items))
    people = sorted(set(recipients))
    unique = {m.key: m for m in mails}
    count: Counter[tuple[str, str]] = Counter()
    for mail in unique.values():
        for recipient in set(mail.recipients) & set(people):
            for item in set(mail.items):
                count[(recipient, item)] += 1
    twice = [(r, i) for r in people for i in wanted if count[(r, i)] > 1]
    never = [(r, i) for r in people for i in wanted if count[(r, i)] == 0]
    return DigestVerdict(len(wanted), len(people), twice, never)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100), linear between the closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def merged(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of intervals, as sorted disjoint intervals."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlap(intervals: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """How long the (disjoint) intervals cover [start, end]."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)


def waits(sent: Sequence[Sent], seen: Sequence[Seen], *, time_scale: float,
          busy: Iterable[tuple[float, float]] = (),
          cpu_until: Mapping[str, float] | None = None,
          channels: Iterable[str] | None = None, must_stay: bool | None = None,
          only: set[str] | None = None) -> list[float]:
    """Per answered message (expecting a reply): from its sending to the first visible
    output of its reply (a draft or the reply itself), in seconds on the simulated CPU.

    A reply the local model wrote waited for the CPU from its sending until its first
    token (`cpu_until[token]`, monotonic): the requests ahead of it, then its own prompt.
    Within that window the time the simulated CPU computed (`busy`, any request's) counts
    at its simulated length (wall / time_scale), the rest (Axi's own work) at its wall
    length; after the first token (drafts' and Telegram's pacing, the outbox) and for a
    reply the fallback wrote, the wall length. Without `cpu_until` (or at time_scale 1):
    the wall wait. `must_stay`: only the messages whose content must (True) or need not
    (False) stay on the server; `only`: only these tokens."""
    keep = set(channels) if channels is not None else None
    cpu = merged(busy)
    until = cpu_until or {}
    first: dict[str, float] = {}
    for s in seen:
        if s.token is not None and s.kind in ("reply", "draft"):
            first[s.token] = min(first.get(s.token, math.inf), s.at)
    out = []
    for m in sent:
        if m.expect != "reply" or m.token not in first or (keep is not None
                                                            and m.channel not in keep):
            continue
        if must_stay is not None and (m.secret is not None) != must_stay:
            continue
        if only is not None and m.token not in only:
            continue
        end = max(first[m.token], m.at)
        computed = overlap(cpu, m.at, min(end, until[m.token])) if m.token in until else 0.0
        out.append(end - m.at + computed * (1 / time_scale - 1))
    return out


def first_try(stored: Sequence[Stored]) -> set[str]:
    """Tokens whose every stored row was answered at the first try and its reply sent at
    the first try: their wait is the CPU's and Axi's, not a retry timer's (a message that
    waited for a model to come back, or for a channel, waited on Axi's backoff, which is
    wall time in the soak as in life)."""
    straight: dict[str, bool] = {}
    for r in stored:
        if r.token:
            straight[r.token] = straight.get(r.token, True) and r.tries <= 1 \
                and r.send_tries <= 1
    return {t for t, ok in straight.items() if ok}


def local_share(usage: Mapping[str, Any]) -> tuple[float | None, int, int]:
    """(share, local replies, replies) from `MemoryStore.llm_usage`."""
    replies = int(usage.get("replies") or 0)
    local = int(usage.get("local_replies") or 0)
    return (local / replies if replies else None), local, replies


def _stranger_conversations(sent: Sequence[Sent]) -> list[str]:
    return sorted({m.conversation for m in sent if m.expect == "stranger"})


def _stranger_notices(seen: Sequence[Seen], conversation: str) -> int:
    return len({s.key for s in seen
                if s.kind == "stranger_notice" and s.conversation == conversation})


# ---------------------------------------------------------------------- the figures
@dataclass
class Figures:
    sent: int
    sent_by_channel: dict[str, int]
    received: int  # distinct tokens stored by Axi (contacts included)
    received_by_channel: dict[str, int]
    expected_replies: int
    answered_once: int
    as_designed: int  # strangers, held mails and relays that went as designed
    lost: list[str]
    duplicated: list[str]
    order_violations: list[tuple[str, str]]
    leaks: dict[str, int]
    unexpected_answers: list[str]
    digest: DigestVerdict
    waits_live: list[float]
    waits_email: list[float]
    waits_by_channel: dict[str, list[float]]
    waits_wall: list[float]
    waits_must_stay: list[float]
    waits_retried: list[float]
    client_resends: list[str]
    same_key_repeats: int
    share: tuple[float | None, int, int]
    secrets: int = 0
    cloud_texts: int = 0
    secrets_local: int = 0  # secrets the local model read (all of them, in a sound run)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def must_be_zero(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "order violations": len(self.order_violations),
            "local-only content reaching the cloud": len(self.leaks),
            "answered although they must not be": len(self.unexpected_answers),
            "digest items reported twice": len(self.digest.twice),
            "digest items never reported": len(self.digest.never),
        }

    @property
    def failed(self) -> bool:
        return any(self.must_be_zero.values())


def evaluate(sent: Sequence[Sent], seen: Sequence[Seen], stored: Sequence[Stored], *,
             secrets: Iterable[str], cloud_texts: Iterable[str], digest_items: Iterable[str],
             digests: Sequence[DigestMail], digest_recipients: Iterable[str],
             usage: Mapping[str, Any], time_scale: float,
             busy: Sequence[tuple[float, float]] = (),
             cpu_until: Mapping[str, float] | None = None, local_texts: Iterable[str] = ()
             ) -> Figures:
    """Every figure of the run. `local_texts`: what the local model read, to show the
    secrets did reach it (else their absence from the cloud would prove nothing)."""
    found = deliveries(sent, seen, stored)
    secrets, cloud_texts = list(secrets), list(cloud_texts)
    stored_tokens = {r.token for r in stored if r.token}
    lost_ = lost(sent, seen, stored)
    duplicated_ = duplicated(sent, seen, stored)
    unexpected = unexpected_answers(sent, seen, stored)
    replying = [m for m in sent if m.expect == "reply"]
    once = [m for m in replying if found[m.token].replies == 1
            and m.token not in duplicated_ and m.token not in lost_]
    designed = 0
    for m in sent:
        if m.expect == "relay" and found[m.token].replies >= 1 and m.token not in duplicated_:
            designed += 1
        elif m.expect == "held" and m.token in stored_tokens and m.token not in unexpected:
            designed += 1
        elif m.expect == "stranger" and m.token not in unexpected \
                and m.conversation not in lost_ and m.conversation not in duplicated_:
            designed += 1
    straight = first_try(stored)
    answered = {m.token for m in replying}
    timed = partial(waits, sent, seen, time_scale=time_scale, busy=busy, cpu_until=cpu_until)
    by_channel = {c: timed(channels=[c], only=straight)
                  for c in sorted({m.channel for m in replying})}
    return Figures(
        sent=len(sent), sent_by_channel=dict(Counter(m.channel for m in sent)),
        received=len({m.token for m in sent} & stored_tokens),
        received_by_channel=dict(Counter(m.channel for m in sent if m.token in stored_tokens)),
        expected_replies=len(replying), answered_once=len(once), as_designed=designed,
        lost=lost_, duplicated=duplicated_, order_violations=order_violations(sent, seen),
        leaks=leaks(secrets, cloud_texts), unexpected_answers=unexpected,
        digest=digest_check(digest_items, digests, digest_recipients),
        waits_live=timed(channels=LIVE_CHANNELS, only=straight),
        waits_email=timed(channels=["email"], only=straight),
        waits_wall=waits(sent, seen, time_scale=1.0, channels=LIVE_CHANNELS, only=straight),
        waits_must_stay=timed(channels=LIVE_CHANNELS, must_stay=True, only=straight),
        waits_retried=waits(sent, seen, time_scale=1.0, only=answered - straight),
        waits_by_channel=by_channel, client_resends=client_resends(sent, stored),
        same_key_repeats=same_key_repeats(seen), share=local_share(usage),
        secrets=len(set(secrets)), cloud_texts=len(cloud_texts),
        secrets_local=len(leaks(secrets, local_texts)))


# ---------------------------------------------------------------------- the table
def _ratio(part: int, whole: int) -> str:
    return f"{part:,} / {whole:,} ({part / whole:.1%})" if whole else f"{part:,} / 0"


def _p(values: Sequence[float]) -> str:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    if p50 is None or p95 is None:
        return "-"
    return f"{p50:,.1f} / {p95:,.1f} s (n={len(values)})"


def _zero(n: int) -> str:
    return f"{n:,}  (must be 0{'' if n == 0 else ': FAILED'})"


def render(f: Figures) -> list[str]:
    """The printed table: one figure a line, ratios where a floor makes sense."""
    channels = sorted(f.sent_by_channel)
    per = ", ".join(f"{c} {f.received_by_channel.get(c, 0)}/{f.sent_by_channel[c]}"
                    for c in channels)
    share, local, replies = f.share
    zero = f.must_be_zero
    rows = [
        ("inbound sent", f"{f.sent:,}"),
        ("inbound received (stored by Axi)", f"{_ratio(f.received, f.sent)}  [{per}]"),
        ("answered exactly once", _ratio(f.answered_once, f.expected_replies)),
        ("strangers, held mails, contact relays as designed",
         _ratio(f.as_designed, f.sent - f.expected_replies)),
        ("lost", _zero(zero["lost"])),
        ("duplicated", _zero(zero["duplicated"])),
        ("per-conversation order violations", _zero(zero["order violations"])),
        ("never-cloud / local-only content reaching the cloud",
         f"{_zero(zero['local-only content reaching the cloud'])}  [{f.secrets} secrets "
         f"({f.secrets_local} read by the local model), {f.cloud_texts:,} fallback requests "
         "and Axis reads searched]"),
        ("answered although they must not be", _zero(zero["answered although they must not be"])),
        ("digest items reported twice",
         f"{_zero(zero['digest items reported twice'])}  [{f.digest.items} items x "
         f"{f.digest.recipients} recipient(s)]"),
        ("digest items never reported", _zero(zero["digest items never reported"])),
        ("person's wait p50 / p95 on the simulated CPU, live channels", _p(f.waits_live)),
        ("person's wait p50 / p95 on the simulated CPU, email", _p(f.waits_email)),
    ]
    rows += [(f"  {c}", _p(v)) for c, v in f.waits_by_channel.items()]
    rows += [("  live, content that must stay on the server", _p(f.waits_must_stay)),
             ("  live, wall clock of this run", _p(f.waits_wall)),
             ("wait of messages retried (a model or a channel down), wall", _p(f.waits_retried))]
    rows += [
        ("local share (llm call log)",
         f"{share:.1%} ({local:,} of {replies:,} replies)" if share is not None else "-"),
        ("messages sent again by their client after a cut", f"{len(f.client_resends):,}"),
        ("same message delivered again with its own id", f"{f.same_key_repeats:,}"),
    ]
    rows += [(name, str(value)) for name, value in f.extra.items()]
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]


def as_json(f: Figures) -> dict[str, Any]:
    """The figures for bench/results/ (counts and percentiles, not the raw waits)."""
    def p(values: Sequence[float]) -> dict[str, Any]:
        return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95)}

    share, local, replies = f.share
    return {
        "sent": f.sent, "sent_by_channel": f.sent_by_channel, "received": f.received,
        "received_by_channel": f.received_by_channel, "expected_replies": f.expected_replies,
        "answered_once": f.answered_once, "as_designed": f.as_designed,
        "must_be_zero": f.must_be_zero, "failed": f.failed,
        "lost": f.lost, "duplicated": f.duplicated,
        "order_violations": [list(v) for v in f.order_violations],
        "leaks": f.leaks, "unexpected_answers": f.unexpected_answers,
        "digest": {"items": f.digest.items, "recipients": f.digest.recipients,
                   "twice": [list(v) for v in f.digest.twice],
                   "never": [list(v) for v in f.digest.never]},
        "wait_sim_live": p(f.waits_live), "wait_sim_email": p(f.waits_email),
        "wait_sim_by_channel": {c: p(v) for c, v in f.waits_by_channel.items()},
        "wait_sim_must_stay": p(f.waits_must_stay), "wait_wall_live": p(f.waits_wall),
        "wait_wall_retried": p(f.waits_retried),
        "local_share": share, "local_replies": local, "replies": replies,
        "client_resends": len(f.client_resends), "same_key_repeats": f.same_key_repeats,
        "secrets": f.secrets, "secrets_local": f.secrets_local, "cloud_texts": f.cloud_texts,
        "extra": f.extra,
    }


def details(f: Figures, limit: int = 20) -> list[str]:
    """The tokens behind each failed figure (to find them in the logs and the database)."""
    out: list[str] = []
    for title, values in (("lost", f.lost), ("duplicated", f.duplicated),
                          ("order violations", f.order_violations),
                          ("answered although they must not be", f.unexpected_answers),
                          ("leaked secrets", sorted(f.leaks.items())),
                          ("digest items reported twice", f.digest.twice),
                          ("digest items never reported", f.digest.never)):
        if values:
            shown = ", ".join(str(v) for v in list(values)[:limit])
            more = f" … and {len(values) - limit} more" if len(values) > limit else ""
            out.append(f"{title}: {shown}{more}")
    return out
