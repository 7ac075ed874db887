"""The email channel as real `axi run` processes: a real Dovecot read over IMAPS (the
subprocess trusts the test CA through SSL_CERT_FILE), replies sent to a real SMTP server
(aiosmtpd), the test database and the loopback Ollama. The in-process tests
(test_email_channel.py) cannot show what a SIGKILL, a restart or a second process on the
same database does to "every mail stored once, answered once": these do.

- killed at the worst moment (the test-only crash point `AXI_TEST_CRASH_AT=email:before_accept`:
  a batch fetched, nothing stored), then by SIGKILL at a random moment while it reads and
  answers (mail still arriving, and arriving while it is dead): every mail is stored once
  and answered once (by design, the one reply whose SMTP send had completed when the kill
  hit, before its row was marked sent, may go out again after the restart, with the same
  Message-ID: the test allows that and nothing else);
- mail arriving while Axi is stopped is answered after it starts, and the mail that was
  there before its very first start is left alone;
- two processes on one database: one reads the mailbox, the other says it does not, and
  nothing is doubled.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from channels.email import CRASH_ENV, external_id
from channels.email_imap import Cursor, ImapConfig
from memory.store import MemoryStore
from tests.bot import conftest as _bot_fixtures
from tests.channels.test_email_channel import AUTHSERV, AXI, mail
from tests.channels.test_telegram_processes import AxiRun, echo_reply
from tests.fakes import mail_fixtures
from tests.fakes.dovecot import Dovecot, free_port
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.smtp_capture import Captured, SmtpCapture
from tests.waiting import until

cli_env = _bot_fixtures.cli_env  # the `axi` subprocess environment on the test database
dovecot_server = mail_fixtures.dovecot_server
dovecot = mail_fixtures.dovecot
smtp_capture_factory = mail_fixtures.smtp_capture_factory
smtp_capture = mail_fixtures.smtp_capture

CLIENT = "martin@example.fr"
NOT_READING = "another axi process reads this mailbox"
HERE = Path(__file__).parent
SEED_ENV = "AXI_TEST_KILL_SEED"
"""The random kill's seed is new each run and named in every failure: set this to replay one."""


def cursor_key(server: Dovecot) -> str:
    """The key `axi run` stores the mailbox's cursor under (user@host/folder)."""
    return ImapConfig(host=server.host, port=server.ssl_port, user=server.user).cursor_key


def question(n: int, label: str = "Question") -> tuple[str, bytes]:
    """(Message-ID, raw mail) of an authenticated question from the known client."""
    message_id = make_msgid(idstring=f"q{n}", domain="example.fr")
    return message_id, mail(CLIENT, f"{label} {n}", f"Bonjour, voici ma question n° {n} ?",
                            message_id=message_id)


@pytest.fixture
async def runs(cli_env: dict[str, str], store: MemoryStore, ollama_server: FakeOllama,
               dovecot: Dovecot, smtp_capture: SmtpCapture, tmp_path: Path
               ) -> AsyncIterator[Any]:
    """Starts `axi run` processes reading `dovecot` and sending to `smtp_capture` (Ludo and
    the client Mme Martin known by their addresses, Mme Martin added with `axi people add`)
    and stops every one of them at the end, whatever happened."""
    await store.add_person("Ludo", relation="créateur", comment_interagir="tutoie",
                           identities=[("email", "ludo@icidordogne.fr")])
    ollama_server.reply = echo_reply
    base = {**cli_env, "AXI_QUIET_HOURS": "off",
            "AXI_EMAIL_ADDRESS": AXI, "AXI_MAIL_AUTHSERV_ID": AUTHSERV,
            "AXI_IMAP_HOST": dovecot.host, "AXI_IMAP_PORT": str(dovecot.ssl_port),
            "AXI_IMAP_TLS": "ssl", "AXI_IMAP_USER": dovecot.user,
            "AXI_IMAP_PASSWORD": dovecot.password,
            "SSL_CERT_FILE": str(dovecot.cafile),  # Python's default context trusts the test CA
            "AXI_SMTP_HOST": smtp_capture.host, "AXI_SMTP_PORT": str(smtp_capture.port),
            "AXI_SMTP_TLS": "none",
            # twenty questions in a few seconds from one client: not a storm here
            "AXI_EMAIL_MAX_PER_SENDER_HOUR": "1000", "AXI_EMAIL_MAX_PER_HOUR": "1000"}
    added = subprocess.run(
        [sys.executable, "-m", "bot.cli", "people", "add", "Mme Martin", "--relation", "client",
         "--email", CLIENT], env=base, cwd=HERE, capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    started: list[AxiRun] = []

    def start(**extra: str) -> AxiRun:
        env = {**base, "AXI_HTTP_PORT": str(free_port()), **extra}
        run = AxiRun(env, tmp_path / f"axi-run-{len(started)}.log")
        started.append(run)
        return run

    try:
        yield start
    finally:
        for run in started:
            run.stop()


async def inbound_counts(store: MemoryStore) -> dict[str, int]:
    """external id → how many inbound email rows carry it."""
    async with store.db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT identifiant_externe, count(*) FROM messages WHERE sens = 'entrant' "
            "AND canal = 'email' GROUP BY identifiant_externe"))).all()
    return {str(r[0]): int(r[1]) for r in rows}


async def replies_per_inbound(store: MemoryStore) -> dict[str, tuple[str, list[str]]]:
    """external id → (the inbound's state, the states of the outbound rows answering it)."""
    async with store.db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT i.identifiant_externe, i.etat, o.etat FROM messages i "
            "LEFT JOIN messages o ON o.en_reponse_a = i.id AND o.sens = 'sortant' "
            "WHERE i.sens = 'entrant' AND i.canal = 'email' ORDER BY i.id, o.id"))).all()
    found: dict[str, tuple[str, list[str]]] = {}
    for ext, state, reply in rows:
        found.setdefault(str(ext), (str(state), []))[1].extend([str(reply)] if reply else [])
    return found


def replies_by_question(smtp: SmtpCapture) -> dict[str, list[Captured]]:
    """In-Reply-To → the replies the SMTP server received, in arrival order."""
    by: dict[str, list[Captured]] = defaultdict(list)
    for sent in list(smtp.messages):
        by[str(sent.message["In-Reply-To"])].append(sent)
    return by


async def stored_cursor(store: MemoryStore, key: str) -> Cursor | None:
    return Cursor.loads(await store.read_cursor("email", key))


def all_answered(smtp: SmtpCapture, message_ids: list[str]) -> bool:
    by = replies_by_question(smtp)
    return all(by.get(m) for m in message_ids)


async def settled(store: MemoryStore) -> bool:
    return await store.pending_counts() == {}


async def test_killed_before_accept_then_at_a_random_moment_every_mail_once(
    runs: Any, store: MemoryStore, dovecot: Dovecot, smtp_capture: SmtpCapture,
    ollama_server: FakeOllama
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.randrange(2**32))
    rng = random.Random(seed)
    key = cursor_key(dovecot)
    asked = [question(n) for n in range(1, 21)]
    ids = [m for m, _ in asked]

    # 1. the worst moment: ten mails fetched, the process dies before storing them
    crashing = runs(**{CRASH_ENV: "email:before_accept"})
    first = await until(lambda: crashing.alive() and stored_cursor(store, key), 60,
                        message="axi run never read the mailbox")
    assert first.last_uid == 0  # the first reading found an empty mailbox
    dovecot.append_many([raw for _, raw in asked[:10]])
    await until(lambda: crashing.proc.poll() is not None, 60,
                message="axi run never reached the crash point")
    assert crashing.proc.returncode == 137, crashing.stderr
    assert await inbound_counts(store) == {}
    assert await stored_cursor(store, key) == first  # the cursor did not move
    assert smtp_capture.messages == []

    # 2. restarted: once it answers, the other ten arrive one by one while it reads and
    # answers; it is killed at a random moment (after a random number of them, plus a
    # random delay) and the rest arrive while it is dead
    ollama_server.delay_s = 0.1  # a model that takes a little time: the kill lands mid-work
    healthy = runs()
    kill_after, jitter = rng.randint(1, 10), rng.uniform(0.0, 0.2)
    time_to_kill = asyncio.Event()

    async def more_mail() -> None:
        for n, (_, raw) in enumerate(asked[10:], 1):
            await asyncio.to_thread(dovecot.append, raw)
            if n == kill_after:
                time_to_kill.set()
            await asyncio.sleep(rng.uniform(0.02, 0.15))
    await until(lambda: healthy.alive() and smtp_capture.messages, 60,
                message="the restarted process never answered")
    arriving = asyncio.create_task(more_mail())
    await time_to_kill.wait()
    await asyncio.sleep(jitter)
    healthy.proc.send_signal(signal.SIGKILL)
    healthy.proc.wait(timeout=10)
    killed_at = time.time()
    await arriving

    # 3. restarted again: everything stored once and answered once
    ollama_server.delay_s = 0.0
    last = runs()
    await until(lambda: last.alive() and all_answered(smtp_capture, ids), 60,
                message=f"not every mail answered after the restarts (seed {seed}): "
                        f"{sorted(replies_by_question(smtp_capture))}")
    await until(lambda: settled(store), 30, message=f"never settled (seed {seed})")
    await asyncio.sleep(0.5)  # a late duplicate would show now

    raws = dovecot.messages()
    assert len(raws) == 20
    assert await inbound_counts(store) == {external_id(raw): 1 for raw in raws}, seed
    replies = await replies_per_inbound(store)
    assert replies == {
        external_id(raw): ("traite", ["envoye"]) for raw in raws}, seed
    cursor = await stored_cursor(store, key)
    assert cursor is not None and cursor.last_uid == max(dovecot.uids()), seed

    by = replies_by_question(smtp_capture)
    assert sorted(by) == sorted(ids), seed
    for message_id, copies in by.items():
        assert [c.rcpt_tos for c in copies] == [[CLIENT]] * len(copies)
        # One reply per question. The one exception the design allows: the reply whose
        # SMTP send had completed when the SIGKILL hit, before its row was marked sent,
        # is sent again after the restart -- with the same Message-ID (clients show it
        # once). It straddles the kill, and there is at most one: the client's replies are
        # one conversation, sent one at a time.
        if len(copies) > 1:
            assert len(copies) == 2 and copies[0].received_at <= killed_at \
                < copies[1].received_at, (seed, message_id)
            assert copies[0].message["Message-ID"] == copies[1].message["Message-ID"], seed
    doubled = sum(len(c) - 1 for c in by.values())
    assert doubled <= 1, (seed, doubled)
    assert len(smtp_capture.messages) == 20 + doubled
    assert "Traceback" not in last.stderr, last.stderr


async def test_mail_arriving_while_stopped_is_answered_after_start(
    runs: Any, store: MemoryStore, dovecot: Dovecot, smtp_capture: SmtpCapture
) -> None:
    key = cursor_key(dovecot)
    _, old = question(0, "Ancienne")
    dovecot.append(old)  # there before Axi's very first start: left alone
    first = runs()
    cursor = await until(lambda: first.alive() and stored_cursor(store, key), 60,
                         message="axi run never read the mailbox")
    assert cursor.last_uid == 1
    first.stop()
    assert first.proc.returncode == 0, first.stderr

    asked = [question(n, "Pendant l'arrêt") for n in (1, 2, 3)]
    dovecot.append_many([raw for _, raw in asked])
    assert await inbound_counts(store) == {}
    second = runs()
    ids = [m for m, _ in asked]
    await until(lambda: second.alive() and all_answered(smtp_capture, ids), 60,
                message="the mail that arrived while Axi was stopped was not answered")
    await until(lambda: settled(store), 30)
    await asyncio.sleep(0.5)
    assert sorted(replies_by_question(smtp_capture)) == sorted(ids)
    assert len(smtp_capture.messages) == 3
    assert await inbound_counts(store) == {external_id(raw): 1
                                           for raw in dovecot.messages()[1:]}
    cursor = await stored_cursor(store, key)
    assert cursor is not None and cursor.last_uid == 4


async def test_two_processes_one_reader_no_duplicate(
    runs: Any, store: MemoryStore, dovecot: Dovecot, smtp_capture: SmtpCapture
) -> None:
    key = cursor_key(dovecot)
    reader = runs()
    await until(lambda: reader.alive() and stored_cursor(store, key), 60,
                message="the first axi run never read the mailbox")
    other = runs()
    await until(lambda: other.alive() and NOT_READING in other.stderr, 60,
                message="the second axi run never said why it does not read")
    asked = [question(n) for n in range(1, 6)]
    dovecot.append_many([raw for _, raw in asked])
    ids = [m for m, _ in asked]
    await until(lambda: reader.alive() and other.alive() and all_answered(smtp_capture, ids),
                60, message="the five mails were not all answered")
    await until(lambda: settled(store), 30)
    await asyncio.sleep(0.5)
    assert {m: len(c) for m, c in replies_by_question(smtp_capture).items()} == \
        dict.fromkeys(ids, 1)
    assert await inbound_counts(store) == {external_id(raw): 1 for raw in dovecot.messages()}
    assert NOT_READING not in reader.stderr
    assert "Traceback" not in reader.stderr + other.stderr
