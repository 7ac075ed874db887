"""The core's side of the web API (bot/web_contract.WebAccess): bearer tokens to
persons, and a person's conversation as the web chat shows it. The token itself is
checked by memory/tokens.py (only its hash is stored); who may see private memory, and who
may use an `admin` token, is decided here by bot/policy, as for every channel.
"""

from __future__ import annotations

from bot.policy import may_administer, may_use_axis, sees_private
from bot.web_contract import HistoryItem, TokenGrant
from memory.store import MemoryStore


class WebAccessService:
    def __init__(self, store: MemoryStore):
        self.store = store

    async def authenticate(self, secret: str) -> TokenGrant | None:
        token = await self.store.find_token(secret)
        if token is None:
            return None
        person = await self.store.get_person(token.relation_id)
        if person.bloque:
            return None
        if token.portee == "admin" and not may_administer(person.relation):
            return None  # an admin token outlives its holder's role: it stops with it
        if token.portee == "axis" and not may_use_axis(person):
            return None  # Ludo's private memory: never a client's, whatever the token
        return TokenGrant(token_id=token.id, person_id=person.id, person_name=person.personne,
                          relation=person.relation or "", scope=token.portee,
                          channel=token.channel, address=token.address,
                          inner_circle=sees_private(person))

    async def history(self, grant: TokenGrant, *, before: int | None = None,
                      limit: int = 50) -> list[HistoryItem]:
        conversation = f"{grant.channel}:{grant.address}"  # bot.pipeline.conversation_key
        rows = await self.store.conversation_page(conversation, before=before, limit=limit)
        items = []
        for m in rows:
            notice = bool(m.metadata.get("avis")) or m.metadata.get("genre") == "notice"
            items.append(HistoryItem(id=m.id, direction="in" if m.sens == "entrant" else "out",
                                     text=m.texte, at=m.cree_le, in_reply_to=m.en_reponse_a,
                                     kind="notice" if notice else "message"))
        return items

    async def owns_message(self, grant: TokenGrant, message_id: int) -> bool:
        return await self.store.inbound_origin(message_id) == (grant.channel, grant.address)
