"""The web chat in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by Selenium; never a downloaded browser), against a whole Axi serving its HTTP
channel on a loopback port with a loopback Ollama that writes its reply word by word:
Ludo logs in with his token, sees his history (older pages as he scrolls up), sends a
message and watches the reply being written; while the model is down he sees Axi's notice,
and the reply once it comes (the page asks for it after the stream's timeout); sending too
often is answered in French and loses nothing; a wrong or revoked token brings him back to
the login with a French message.

Selenium is synchronous: each browser step runs in a thread (`asyncio.to_thread`) while
Axi's server runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text

from bot.app import Axi
from bot.channel import ChannelSet
from channels.web import WebChannel
from channels.web_guard import WebConfig
from memory.database import Database
from tests.bot.test_pipeline import make_settings
from tests.conftest import empty_tables
from tests.fakes.mail_fixtures import in_ci
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until_sync

pytestmark = pytest.mark.slow

CHROMIUM = ("/usr/bin/chromium", "chromium")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
FIRST_REPLY = "Salut Ludo, je suis là."
STREAMED_REPLY = "Voici ma réponse, écrite mot après mot pour que tu la voies venir."
WAIT_S = 15.0

T = TypeVar("T")


def _find(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        found = name if os.path.isfile(name) and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> tuple[str, str]:
    """Chromium and its driver, or skip (fail under CI=true, where the project's test
    set-up, deploy/local.py, installs them)."""
    browser, driver = _find(CHROMIUM), _find(CHROMEDRIVER)
    if browser and driver:
        return browser, driver
    reason = ("Chromium or chromedriver is not installed (Debian packages chromium and "
              "chromium-driver: `python3 deploy/local.py test` installs them)")
    if in_ci():
        pytest.fail(f"{reason}; under CI=true they must be", pytrace=False)
    pytest.skip(reason)


@dataclass
class Chat:
    """Axi serving the web chat, Ludo's chat token and a browser."""

    app: Axi
    channel: WebChannel
    token: str
    token_id: int
    person_id: int
    driver: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.channel.port}/"

    async def browse(self, step: Callable[[Any], T]) -> T:
        """A browser step, in a thread: the server keeps answering meanwhile."""
        return await asyncio.to_thread(step, self.driver)


@contextmanager
def chromium(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    browser, driver_path = require_browser()
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager never downloads anything
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--lang=fr-FR",
                f"--user-data-dir={tmp / 'chromium'}"):
        options.add_argument(arg)
    # Ludo's phone: 360 CSS pixels wide (a headless window cannot be narrower than 500)
    options.add_experimental_option("mobileEmulation", {
        "deviceMetrics": {"width": 360, "height": 740, "pixelRatio": 2.0, "touch": True}})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@asynccontextmanager
async def web_chat(db: Database, database_url: str | None, data_dir: Path,
                   ollama: FakeOllama, **config: Any) -> AsyncIterator[tuple[Axi, WebChannel, Any]]:
    await empty_tables(db)
    ollama.reply = FIRST_REPLY
    settings = make_settings(ollama, None, database_url, data_dir, AXI_QUIET_HOURS="off")
    channel = WebChannel(WebConfig(**{"host": "127.0.0.1", "port": 0, **config}))
    async with Axi(settings, ChannelSet({"web": channel}, frozenset({"web"}), None)) as app:
        ludo = await app.store.add_person("Ludo", relation="créateur",
                                          comment_interagir="tutoie")
        token = await app.store.create_token(ludo.id, scope="chat", name="téléphone")
        await app.start_channels()
        app.start_loops(extractor=False, maintenance=False, embeddings=False)
        yield app, channel, token


@pytest.fixture
async def chat(db: Database, database_url: str | None, test_data_dir: Path,
               ollama_server: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               request: pytest.FixtureRequest) -> AsyncIterator[Chat]:
    """`WebConfig` fields may come from an indirect parameter."""
    require_browser()
    config = getattr(request, "param", {})
    async with web_chat(db, database_url, test_data_dir, ollama_server,
                        **config) as (app, channel, token):
        with chromium(tmp_path, monkeypatch) as driver:
            yield Chat(app, channel, token.secret, token.record.id, token.record.relation_id,
                       driver)


# ---------------------------------------------------------------------- browser steps
def shown(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return until_sync(lambda: (el := driver.find_element(By.ID, element_id)).is_displayed()
                      and el, WAIT_S, message=f"#{element_id} never appeared")


def texts(driver: Any, selector: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector)


def log_in(driver: Any, token: str) -> None:
    field = shown(driver, "token")
    field.clear()
    field.send_keys(token)
    shown(driver, "login-button").click()


def severe_logs(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# ---------------------------------------------------------------------- tests
async def test_ludo_logs_in_sees_history_and_watches_the_reply_being_written(
        chat: Chat, ollama_server: FakeOllama) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # an earlier exchange, through the API as any client sends it
    async with httpx.AsyncClient(base_url=chat.url, timeout=WAIT_S,
                                 headers={"Authorization": f"Bearer {chat.token}"}) as http:
        earlier = await http.post("api/chat", json={"message": "Tu es là ?"})
        assert earlier.status_code == 200, earlier.text
        assert earlier.json()["reply"] == FIRST_REPLY

    def logs_in(driver: Any) -> None:
        driver.get(chat.url)
        assert driver.title.startswith("Axi")
        assert not driver.find_element(By.ID, "chat-view").is_displayed()
        log_in(driver, chat.token)
        shown(driver, "chat-view")
        assert driver.find_element(By.ID, "who").get_attribute("textContent") == "Ludo"
        until_sync(lambda: texts(driver, ".msg .text") == ["Tu es là ?", FIRST_REPLY], WAIT_S,
                   message="the history never showed")
        assert texts(driver, ".msg.mine .text") == ["Tu es là ?"]
        assert driver.execute_script("return localStorage.getItem('axi.jeton')") == chat.token
        # readable on a 360 px phone: nothing wider than the screen, type of 18 px or more
        assert driver.execute_script("return window.innerWidth") == 360
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 360
        sizes = driver.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.offsetParent)"
            ".map(e => parseFloat(getComputedStyle(e).fontSize))")
        assert min(sizes) >= 18

    await chat.browse(logs_in)

    ollama_server.reply = STREAMED_REPLY
    ollama_server.chunk_delay_s = 0.08  # a model writing: ~1 s for the whole reply

    def sends_and_watches(driver: Any) -> dict[str, Any]:
        box = shown(driver, "message")
        box.send_keys("Écris-moi")
        box.send_keys(Keys.SHIFT, Keys.ENTER)  # a new line, not a send
        box.send_keys("une longue réponse")
        assert box.get_attribute("value") == "Écris-moi\nune longue réponse"
        assert len(texts(driver, ".msg")) == 2
        box.send_keys(Keys.ENTER)
        status = shown(driver, "status")  # while the model writes
        assert "Axi réfléchit…" in status.text
        partial = until_sync(lambda: (t := texts(driver, ".msg.axi .text")[-1])
                             and t != STREAMED_REPLY and t, WAIT_S,
                             message="no partial reply was ever shown")
        until_sync(lambda: texts(driver, ".msg.axi .text")[-1] == STREAMED_REPLY, WAIT_S,
                   message="the streamed reply never completed")
        until_sync(lambda: not driver.find_element(By.ID, "status").is_displayed(), WAIT_S,
                   message="'Axi réfléchit…' stayed after the reply")
        last = driver.find_elements(By.CSS_SELECTOR, ".msg.axi")[-1]
        mine = driver.find_elements(By.CSS_SELECTOR, ".msg.mine")[-1]
        return {"partial": partial, "chunks": int(last.get_attribute("data-chunks") or 0),
                "reply_id": last.get_attribute("data-id"), "sent_id": mine.get_attribute("data-id"),
                "sent": mine.find_element(By.CSS_SELECTOR, ".text").text,
                "box": box.get_attribute("value")}

    seen = await chat.browse(sends_and_watches)
    assert STREAMED_REPLY.startswith(seen["partial"])  # a real beginning of the reply
    assert seen["chunks"] >= 2, "the reply came in one piece, not streamed"
    assert seen["sent"] == "Écris-moi\nune longue réponse" and seen["box"] == ""
    sent = await chat.app.store.get_message(int(seen["sent_id"]))
    assert sent.texte == "Écris-moi\nune longue réponse"
    assert not sent.metadata.get("local_only")
    assert (await chat.app.store.get_message(int(seen["reply_id"]))).texte == STREAMED_REPLY

    ollama_server.chunk_delay_s = 0.0
    ollama_server.reply = FIRST_REPLY

    def sends_locally(driver: Any) -> str:
        shown(driver, "local").click()
        shown(driver, "message").send_keys("Un secret", Keys.ENTER)
        until_sync(lambda: len(texts(driver, ".msg.axi .text")) == 3
                   and texts(driver, ".msg.axi .text")[-1] == FIRST_REPLY, WAIT_S)
        mine = driver.find_elements(By.CSS_SELECTOR, ".msg.mine")[-1]
        assert "local" in mine.find_element(By.CSS_SELECTOR, ".meta").text
        return str(mine.get_attribute("data-id"))

    local_id = await chat.browse(sends_locally)
    assert (await chat.app.store.get_message(int(local_id))).metadata.get("local_only") is True

    def comes_back_and_leaves(driver: Any) -> None:
        driver.refresh()  # the token is remembered: straight to the conversation
        shown(driver, "chat-view")
        until_sync(lambda: texts(driver, ".msg .text")[-4:] == [
            "Écris-moi\nune longue réponse", STREAMED_REPLY, "Un secret", FIRST_REPLY], WAIT_S,
            message="the history after a reload misses the new exchange")
        assert severe_logs(driver) == []  # no CSP violation, no failed request
        shown(driver, "logout").click()
        shown(driver, "login-view")
        assert "déconnecté" in shown(driver, "login-error").text
        assert driver.execute_script("return localStorage.getItem('axi.jeton')") is None
        assert texts(driver, ".msg") == []

    await chat.browse(comes_back_and_leaves)


async def test_a_wrong_or_revoked_token_brings_back_the_login_in_french(chat: Chat) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    address = f"personne-{chat.person_id}"
    for n in range(1, 36):  # more than a page (30): older ones load on scrolling up
        await chat.app.store.queue_outbound(canal="web", adresse=address,
                                            conversation=f"web:{address}", texte=f"Note n°{n}")

    def wrong_token(driver: Any) -> None:
        driver.get(chat.url)
        shown(driver, "login-button").click()  # nothing typed
        assert shown(driver, "login-error").text == "Saisissez votre jeton d'accès."
        log_in(driver, "axi_ceci-n-est-pas-un-jeton")
        error = until_sync(lambda: (e := driver.find_element(By.ID, "login-error")).is_displayed()
                           and e.text.startswith("Jeton refusé") and e, WAIT_S)
        assert "pas valable" in error.text
        assert not driver.find_element(By.ID, "chat-view").is_displayed()
        assert driver.execute_script("return localStorage.getItem('axi.jeton')") is None
        log_in(driver, chat.token)
        shown(driver, "chat-view")
        notes = [f"Note n°{n}" for n in range(1, 36)]
        until_sync(lambda: texts(driver, ".msg .text") == notes[5:], WAIT_S)
        assert shown(driver, "older").text == "Messages plus anciens"
        driver.execute_script("document.getElementById('log').scrollTop = 0")
        until_sync(lambda: texts(driver, ".msg .text") == notes, WAIT_S,
                   message="scrolling up never loaded the older messages")
        assert not driver.find_element(By.ID, "older").is_displayed()  # nothing older
        assert driver.execute_script("return document.getElementById('log').scrollTop") > 0

    await chat.browse(wrong_token)
    await chat.app.store.revoke_token(chat.token_id)

    def revoked(driver: Any) -> None:
        shown(driver, "message").send_keys("Encore là ?", Keys.ENTER)
        error = shown(driver, "login-error")
        assert error.text.startswith("Jeton refusé")
        assert not driver.find_element(By.ID, "chat-view").is_displayed()
        assert driver.execute_script("return localStorage.getItem('axi.jeton')") is None

    await chat.browse(revoked)
    inbound = await chat.app.store.conversation_page(f"web:personne-{chat.person_id}",
                                                     before=None, limit=10)
    assert not [m for m in inbound if m.texte == "Encore là ?"]  # refused, never stored


@pytest.mark.parametrize("chat", [{"reply_timeout_s": 1.5, "rate_per_minute": 1}],
                         indirect=True)
async def test_the_wait_for_the_model_and_the_rate_limit_are_said_in_french(
        chat: Chat, ollama_server: FakeOllama) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ollama_server.fail_status = 500  # the local model is down, and there is no fallback

    def waits(driver: Any) -> dict[str, str]:
        driver.get(chat.url)
        log_in(driver, chat.token)
        shown(driver, "message").send_keys("Tu es là ?", Keys.ENTER)
        notice = until_sync(lambda: texts(driver, ".msg.notice .text"), WAIT_S,
                            message="Axi's notice of the wait never showed")[0]
        status = shown(driver, "status").text
        # past the stream's timeout (`pending`) the page asks for the reply every few seconds
        until_sync(lambda: driver.find_elements(By.CSS_SELECTOR, ".msg.axi")[-1]
                   .get_attribute("data-state") == "polling", WAIT_S,
                   message="the page never went on waiting after the stream's timeout")
        return {"notice": notice, "status": status,
                "id": driver.find_elements(By.CSS_SELECTOR, ".msg.mine")[-1]
                .get_attribute("data-id")}

    seen = await chat.browse(waits)
    assert "moteur de réflexion est momentanément indisponible" in seen["notice"]
    assert seen["status"].startswith("Axi réfléchit…")
    assert seen["notice"] in seen["status"]  # the wait, said where Ludo looks
    ollama_server.fail_status = None
    async with chat.app.store.db.sessions.begin() as session:  # skip the 15 s backoff
        await session.execute(text("UPDATE messages SET prochain_essai = now() WHERE id = :i"),
                              {"i": int(seen["id"])})

    def gets_the_late_reply(driver: Any) -> None:
        until_sync(lambda: texts(driver, ".msg.axi .text")[-1:] == [FIRST_REPLY], WAIT_S,
                   message="the late reply never showed")
        until_sync(lambda: not driver.find_element(By.ID, "status").is_displayed(), WAIT_S)
        assert texts(driver, ".msg .text")[-3:] == ["Tu es là ?", seen["notice"], FIRST_REPLY]

    await chat.browse(gets_the_late_reply)

    def sends_too_often(driver: Any) -> None:  # one message a minute here
        shown(driver, "message").send_keys("Et encore une question", Keys.ENTER)
        error = shown(driver, "chat-error").text
        assert error.startswith("Trop de demandes, réessayez dans ") and error.endswith(" s.")
        assert 1 <= int(error.split()[-2]) <= 60
        # nothing typed is lost: the text is back in the box, the bubble says it was not sent
        assert shown(driver, "message").get_attribute("value") == "Et encore une question"
        last = driver.find_elements(By.CSS_SELECTOR, ".msg.mine")[-1]
        assert last.find_element(By.CSS_SELECTOR, ".meta").text == "Vous · non envoyé"
        assert shown(driver, "chat-view")  # still logged in

    await chat.browse(sends_too_often)
