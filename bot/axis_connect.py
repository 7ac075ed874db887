"""Connecting Axis: the core's side of the OAuth 2.1 authorization server that Claude.ai's
custom connector talks to (bot/axis_contract.AxisOAuth; the HTTP side is
channels/axis_oauth.py, on the `mcp` SDK's routes).

Why here: who may connect is a policy decision — "ne rien lancer sans accord Ludo". Every
authorization request (`/authorize`) becomes a pending approval and a confirmation asked
of Ludo (action `axis.connecter`); only after his "oui" is an authorization code issued,
once. Registration and `/authorize` are open to anyone, so: the waiting page and Ludo's
question show one short random code (he approves only the request on his own screen); a
client address holds one pending approval, and beyond MAX_PENDING the newest ends the
oldest (strangers can never keep Ludo's own request out); his "non" ends it at once; only
https (or loopback) redirect URIs are registered. A refresh keeps the connection alive
without asking him again. Codes, refresh tokens and approval ids are stored as SHA-256
hashes (memory/oauth_state.py); access tokens are `axis` jetons of the Axis person that
expire within the hour (memory/tokens.py). Registered clients' secrets are kept as issued:
the SDK compares them, and a secret alone gets nothing without a one-time, PKCE-bound code
or a refresh token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from bot.axis_contract import Approval, AxisRefused, AxisToken, Grant, IssuedTokens
from bot.confirmations import ActionContext, Confirmations
from bot.policy import may_use_axis, sees_private
from bot.web_contract import TokenGrant
from memory.errors import InvalidInput, NotFound
from memory.oauth_state import OAuthState
from memory.store import MemoryStore
from memory.tokens import token_hash

CONNECT = "axis.connecter"
"""The confirmation Ludo answers to let Axis (a Claude.ai connector) in."""

log = logging.getLogger(__name__)

CLIENT, APPROVAL, CODE, REFRESH = "client", "approbation", "code", "rafraichissement"
USED_REFRESH = "rafraichi"
"""A refresh token already exchanged (rotated), kept until it would have expired: shown
again, it was copied — by a thief, or by Axis after a thief — and the server cannot tell
who is who, so the whole connection (its family) ends (RFC 9700 §4.14.2)."""
APPROVAL_TTL = timedelta(minutes=15)
CODE_TTL = timedelta(minutes=5)
ACCESS_TTL = timedelta(hours=1)
REFRESH_TTL = timedelta(days=90)
MAX_PENDING = 3
"""Approvals waiting for Ludo at once: registration is open to anyone. A new request
beyond it ends the oldest pending one (so strangers can never keep Ludo's own out)."""
MAX_PENDING_PER_IP = 1
"""Pending approvals per client address (or IPv6 /64): a newer one replaces it."""
CODE_ALPHABET = "ACDEFHJKMNPRTUVWXY34679"
"""The short code's letters: none that reads like another (0/O, 1/I/L, 2/Z, 5/S, 8/B)."""
CODE_LENGTH = 4
MAX_UNAPPROVED_CLIENTS = 100
"""Registered clients Ludo never approved, kept at most (the oldest go first; each is
also forgotten a day after registering): registration is open to anyone."""
SCOPE = "axis"
REFRESH_PREFIX = "axr_"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def redirect_allowed(uri: str) -> bool:
    """Where a browser may be sent back with a code (or a refusal): an https address, or
    an http(s) one on this very machine (a local MCP client), never javascript:, data:
    or a plain http site — the waiting page would otherwise redirect anywhere."""
    try:
        parts = urlsplit(uri)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if parts.fragment or not host:
        return False
    scheme = parts.scheme.lower()
    return scheme == "https" or (scheme == "http" and host in LOOPBACK_HOSTS)


async def approve_connection(ctx: ActionContext) -> str:
    """Ludo said "oui": the pending approval may now issue its code (in the claim's
    transaction, so the confirmation and the approval move together)."""
    key = str(ctx.payload.get("approbation", ""))
    row = await ctx.execute(
        "UPDATE oauth_etats SET donnees = donnees || jsonb_build_object('etat', 'approuvee') "
        "WHERE genre = :g AND cle = :k AND donnees->>'etat' = 'en_attente' "
        "AND expire_le > now() RETURNING client_id", {"g": APPROVAL, "k": key})
    client_id = row.scalar()
    if client_id is None:
        return "Cette demande de connexion n'est plus valable : rien n'a changé."
    await ctx.execute(
        "UPDATE oauth_etats SET donnees = donnees || jsonb_build_object('approuve_le', "
        "now()::text) WHERE genre = :g AND cle = :c", {"g": CLIENT, "c": client_id})
    return ("C'est fait : Axis est connecté à Axi. La page ouverte dans Claude.ai continue "
            "toute seule.")


async def refuse_connection(ctx: ActionContext) -> None:
    """Ludo said "non" (or answered too late): the approval ends at once — its place among
    the pending ones is free, and the waiting page sends the browser back refused."""
    await ctx.execute(
        "UPDATE oauth_etats SET donnees = donnees || jsonb_build_object('etat', 'refusee') "
        "WHERE genre = :g AND cle = :k AND donnees->>'etat' = 'en_attente'",
        {"g": APPROVAL, "k": str(ctx.payload.get("approbation", ""))})


def human_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _one_line(value: str | None, limit: int) -> str:
    return " ".join("".join(c for c in (value or "") if c.isprintable()).split())[:limit]


class AxisOAuthService:
    def __init__(self, store: MemoryStore, confirmations: Confirmations, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.store = store
        self.confirmations = confirmations
        self.clock = clock

    # ------------------------------------------------------------------ clients
    async def register_client(self, client_id: str, info: dict[str, Any]) -> None:
        if "\\u0000" in json.dumps(info) or "\x00" in client_id:
            raise AxisRefused("Enregistrement refusé : un champ contient un caractère nul.")
        uris = info.get("redirect_uris") or []
        if not uris or not all(isinstance(u, str) and redirect_allowed(u) for u in uris):
            raise AxisRefused("Adresse de retour refusée : seules les adresses https (ou "
                              "http sur cette machine : localhost, 127.0.0.1, [::1]) sont "
                              "acceptées.")
        await self.store.oauth_purge(unapproved_clients_kept=MAX_UNAPPROVED_CLIENTS - 1)
        await self.store.oauth_put(CLIENT, client_id, client_id=client_id,
                                   donnees={"client": info}, expire_le=None)

    async def get_client(self, client_id: str) -> dict[str, Any] | None:
        row = await self.store.oauth_get(CLIENT, client_id)
        if row is None:
            return None
        info = row.donnees.get("client")
        return info if isinstance(info, dict) else None

    # ------------------------------------------------------------------ approvals
    async def request_approval(self, client_id: str, client_name: str | None,
                               redirect_uri: str, params: dict[str, Any], *,
                               client_ip: str | None = None,
                               ip_group: str | None = None) -> str:
        if not redirect_allowed(redirect_uri):  # a client registered before the rule
            raise AxisRefused("Adresse de retour refusée : recommencez la connexion.")
        await self.store.oauth_purge()
        approval_id = secrets.token_urlsafe(32)
        key = token_hash(approval_id)
        code = human_code()
        ip = _one_line(client_ip, 60) or "inconnue"
        ended = await self.store.oauth_enqueue(
            APPROVAL, key, client_id=client_id, donnees={"params": params, "code": code},
            expire_le=self.clock() + APPROVAL_TTL, field="etat", pending="en_attente",
            ended="expiree", group=ip_group or ip, per_group=MAX_PENDING_PER_IP,
            total=MAX_PENDING)
        for gone in ended:
            await self._withdraw(gone.donnees.get("confirmation"))
        name = _one_line(client_name, 60) or "sans nom"
        host = _one_line(urlsplit(redirect_uri).hostname, 100) or "adresse inconnue"
        question = (f"Axis (Claude.ai) demande à se connecter à Axi : application « {name} », "
                    f"retour vers {host}, depuis l'adresse {ip}.\n"
                    f"Code de la demande : {code}. Ne valide que si la page de connexion "
                    "affiche ce code. Si c'est toi qui viens d'ajouter le connecteur Axi dans "
                    "Claude.ai et que le code est le même, réponds Oui ; sinon Non, et "
                    "personne n'entre.")
        try:
            record = await self.confirmations.ask(CONNECT, question, {"approbation": key},
                                                  expires_in=APPROVAL_TTL)
        except (NotFound, InvalidInput) as exc:
            await self.store.oauth_take(APPROVAL, key)
            raise AxisRefused("Personne ne peut valider cette connexion : Ludo n'est pas "
                              "encore enregistré auprès d'Axi.") from exc
        await self.store.oauth_merge(APPROVAL, key, {"confirmation": record.id})
        row = await self.store.oauth_get(APPROVAL, key)
        if row is None or row.donnees.get("etat") != "en_attente":  # replaced meanwhile
            await self._withdraw(record.id)
        return approval_id

    async def _withdraw(self, confirmation_id: Any) -> None:
        """The question of an approval a newer request replaced: answering it does nothing."""
        with contextlib.suppress(TypeError, ValueError):
            await self.store.withdraw_confirmation(
                int(confirmation_id), "remplacée par une demande de connexion plus récente")

    async def approval(self, approval_id: str) -> Approval | None:
        row = await self.store.oauth_get(APPROVAL, token_hash(approval_id), expired_too=True)
        if row is None or row.client_id is None:
            return None
        state = str(row.donnees.get("etat", "en_attente"))
        now = self.clock()
        if state == "en_attente":
            if row.expire_le is not None and row.expire_le <= now:
                state = "expiree"
            elif (cid := row.donnees.get("confirmation")) is not None:
                record = await self.store.get_confirmation(int(cid))
                if record is None or record.etat in ("refusee", "echouee"):
                    state = "refusee"
                elif record.etat == "expiree" or record.expire_le <= now:
                    state = "expiree"
        elif state == "approuvee" and row.expire_le is not None and row.expire_le <= now:
            state = "expiree"
        return Approval(state=state, client_id=row.client_id,  # type: ignore[arg-type]
                        params=dict(row.donnees.get("params") or {}),
                        code=str(row.donnees.get("code") or ""),
                        replaced=bool(row.donnees.get("remplacee")))

    async def issue_code(self, approval_id: str) -> tuple[str, Approval] | None:
        row = await self.store.oauth_transition(APPROVAL, token_hash(approval_id),
                                                field="etat", old="approuvee", new="utilisee")
        if row is None or row.client_id is None:
            return None
        params = dict(row.donnees.get("params") or {})
        person_id = await self.store.ensure_axis_person()
        code = secrets.token_urlsafe(32)
        await self.store.oauth_put(CODE, token_hash(code), client_id=row.client_id,
                                   donnees={"params": params, "personne": person_id},
                                   expire_le=self.clock() + CODE_TTL)
        return code, Approval(state="utilisee", client_id=row.client_id, params=params)

    async def discard_approval(self, approval_id: str) -> None:
        await self.store.oauth_take(APPROVAL, token_hash(approval_id))

    # ------------------------------------------------------------------ codes and tokens
    @staticmethod
    def _grant(row: OAuthState) -> Grant:
        params = dict(row.donnees.get("params") or {})
        scopes = row.donnees.get("scopes") or params.get("scopes") or [SCOPE]
        person = row.donnees.get("personne")
        return Grant(client_id=row.client_id or "", scopes=tuple(str(s) for s in scopes),
                     expires_at=row.expire_le,
                     person_id=int(person) if person is not None else None, params=params)

    async def load_code(self, client_id: str, code: str) -> Grant | None:
        row = await self.store.oauth_get(CODE, token_hash(code))
        return self._grant(row) if row is not None and row.client_id == client_id else None

    async def exchange_code(self, client_id: str, code: str) -> IssuedTokens | None:
        row = await self.store.oauth_take(CODE, token_hash(code), client_id=client_id)
        if row is None:
            return None
        grant = self._grant(row)
        return await self._issue(grant, grant.scopes)

    async def load_refresh(self, client_id: str, refresh_token: str) -> Grant | None:
        row = await self.store.oauth_get(REFRESH, token_hash(refresh_token))
        if row is None:
            await self._end_if_replayed(client_id, refresh_token)
        return self._grant(row) if row is not None and row.client_id == client_id else None

    async def _end_if_replayed(self, client_id: str, refresh_token: str) -> None:
        """A refresh token rotated already, shown again: its connection ends (the live
        refresh token of its family and that token's access token); Ludo approves again."""
        used = await self.store.oauth_get(USED_REFRESH, token_hash(refresh_token))
        family = str(used.donnees.get("famille") or "") if used is not None else ""
        if used is None or used.client_id != client_id or not family:
            return
        for row in await self.store.oauth_take_where(REFRESH, "famille", family):
            with contextlib.suppress(NotFound, InvalidInput, ValueError):
                await self.store.revoke_token(int(row.donnees.get("jeton", 0)))
        log.warning("Axis connector: a refresh token used already was shown again (copied?): "
                    "the connection of client %s ends", client_id)

    async def exchange_refresh(self, client_id: str, refresh_token: str,
                               scopes: Sequence[str]) -> IssuedTokens | None:
        """A new pair for a refresh token, which serves once (rotation); the access
        token it was issued with ends now."""
        row = await self.store.oauth_take(REFRESH, token_hash(refresh_token),
                                          client_id=client_id)
        if row is None:
            return None
        with contextlib.suppress(NotFound, InvalidInput, ValueError):
            await self.store.revoke_token(int(row.donnees.get("jeton", 0)))
        family = str(row.donnees.get("famille") or secrets.token_hex(8))
        await self.store.oauth_put(USED_REFRESH, token_hash(refresh_token), client_id=client_id,
                                   donnees={"famille": family},
                                   expire_le=row.expire_le or self.clock() + REFRESH_TTL)
        grant = self._grant(row)
        return await self._issue(grant, tuple(scopes) or grant.scopes, family=family)

    async def _issue(self, grant: Grant, scopes: Sequence[str], *,
                     family: str | None = None) -> IssuedTokens | None:
        """A new access token and refresh token; `family`: the connection's (a code's
        exchange starts one, each refresh carries it on)."""
        person_id = grant.person_id or await self.store.ensure_axis_person()
        try:
            new = await self.store.create_token(
                person_id, scope="axis", name="Claude.ai (connecteur OAuth)",
                expires_at=self.clock() + ACCESS_TTL, oauth_client=grant.client_id)
        except NotFound:  # the person was removed since: the connection ends
            return None
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await self.store.oauth_put(
            REFRESH, token_hash(refresh), client_id=grant.client_id,
            donnees={"scopes": list(scopes), "personne": person_id,
                     "jeton": str(new.record.id), "params": grant.params,
                     "famille": family or secrets.token_hex(8)},
            expire_le=self.clock() + REFRESH_TTL)
        return IssuedTokens(access_token=new.secret, expires_in=int(ACCESS_TTL.total_seconds()),
                            refresh_token=refresh, scopes=tuple(scopes))

    async def access_token(self, secret: str) -> AxisToken | None:
        token = await self.store.find_token(secret)
        if token is None:
            return None
        try:
            person = await self.store.get_person(token.relation_id)
        except NotFound:
            return None
        if person.bloque or (token.portee == "axis" and not may_use_axis(person)):
            return None
        grant = TokenGrant(token_id=token.id, person_id=person.id, person_name=person.personne,
                           relation=person.relation or "", scope=token.portee,
                           channel=token.channel, address=token.address,
                           inner_circle=sees_private(person))
        return AxisToken(grant=grant, client_id=token.client_oauth, expires_at=token.expire_le)

    async def revoke(self, *, token_id: int | None = None,
                     refresh_token: str | None = None) -> None:
        """End an access token and its refresh tokens, or a refresh token and its access
        token (RFC 7009: both, whichever is given)."""
        if refresh_token is not None:
            row = await self.store.oauth_take(REFRESH, token_hash(refresh_token))
            if row is not None:
                with contextlib.suppress(ValueError, TypeError):
                    token_id = int(row.donnees.get("jeton", 0)) or token_id
        if token_id:
            with contextlib.suppress(NotFound, InvalidInput):
                await self.store.revoke_token(token_id)
            await self.store.oauth_delete_where(REFRESH, "jeton", str(token_id))
