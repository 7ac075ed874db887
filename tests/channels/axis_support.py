"""What the Axis tests share: a whole Axi (real PostgreSQL, the loopback Ollama, a
recording Telegram stand-in for Ludo's questions, the Axis mailbox channel) serving HTTP on
a loopback port with real uvicorn; the official MCP client over streamable HTTP; Ludo
pressing a confirmation's button."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bot.app import Axi
from bot.channel import ChannelSet, Delivery
from bot.inbound import ButtonPressed, Inbound
from channels.axis_channel import AxisChannel
from channels.web import WebChannel
from channels.web_guard import WebConfig
from memory.confirmations import parse_button
from memory.database import Database
from tests.bot.test_pipeline import RecordingChannel, make_settings, scripted_reply
from tests.conftest import empty_tables
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

PUBLIC_HOST = "axi.test.example"
_presses = iter(range(1, 1_000_000))


@dataclass
class AxisWeb:
    axi: Axi
    web: WebChannel
    telegram: RecordingChannel
    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web.port}"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def question(self, action: str) -> Delivery:
        """The next question asked of Ludo on Telegram for `action` (not yet answered)."""
        async def asked() -> Delivery | None:
            for d in reversed(self.telegram.sent):
                if d.kind == "confirmation" and d.address == "1001":
                    record = await self.axi.store.get_confirmation(_confirmation_id(d))
                    if record is not None and record.action == action \
                            and record.etat == "en_attente":
                        return d
            return None
        found: Delivery = await until(asked, 20, message=f"no question {action} for Ludo")
        return found

    async def press(self, question: Delivery, label: str, *, sender: str = "1001") -> None:
        data = next(d for lab, d in question.choices if lab == label)
        await self.axi.pipeline.accept(Inbound(
            channel="telegram", sender=sender, verified=True, text="",
            external_id=f"press{next(_presses)}", received_at=datetime.now(UTC),
            event=ButtonPressed(data)))


def _confirmation_id(question: Delivery) -> int:
    parsed = parse_button(question.choices[0][1])
    assert parsed is not None
    return parsed[0]


@asynccontextmanager
async def axis_axi(db: Database, database_url: str | None, data_dir: Path,
                   ollama: FakeOllama, anthropic: FakeAnthropic | None = None,
                   **config: Any) -> AsyncIterator[AxisWeb]:
    """Ludo (créateur, Telegram 1001), Mme Durand (client, 2002), Axis (relation axis);
    tokens: `axis` (Axis, scope axis), `ludo_axis` (Ludo, scope axis), `chat` (Ludo, chat)."""
    await empty_tables(db)
    ollama.reply = scripted_reply
    cfg = make_settings(ollama, anthropic, database_url, data_dir, AXI_QUIET_HOURS="off")
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "public_host": PUBLIC_HOST,
                              "reply_timeout_s": 20.0, "rate_per_minute": 1000}
    values.update(config)
    web = WebChannel(WebConfig(**values))
    telegram = RecordingChannel("telegram")
    channels = {"telegram": telegram, "axis": AxisChannel(), "web": web}
    async with Axi(cfg, ChannelSet(channels, frozenset(channels), None)) as app:  # type: ignore[arg-type]
        ludo = await app.store.add_person("Ludo", relation="créateur", comment_interagir="tutoie",
                                          identities=[("telegram", "1001")])
        durand = await app.store.add_person("Mme Durand", relation="client",
                                            identities=[("telegram", "2002")])
        axis_id = await app.store.ensure_axis_person()
        box = AxisWeb(app, web, telegram,
                      ids={"ludo": ludo.id, "durand": durand.id, "axis": axis_id})
        box.tokens = {
            "axis": (await app.store.create_token(axis_id, scope="axis")).secret,
            "ludo_axis": (await app.store.create_token(ludo.id, scope="axis")).secret,
            "chat": (await app.store.create_token(ludo.id, scope="chat")).secret,
        }
        await app.start_channels()
        app.start_loops(extractor=False, maintenance=False, embeddings=False)
        yield box


@asynccontextmanager
async def mcp_session(url: str, token: str, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The official MCP client over streamable HTTP, with a bearer token."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx2.Timeout(60.0)) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http),
                          mode=mode) as client:  # type: ignore[arg-type]
            yield client


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)
