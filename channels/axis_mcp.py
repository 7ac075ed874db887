"""The MCP server Axis talks to (the `mcp` SDK's MCPServer, streamable HTTP at /mcp): its
tools, described in French, each a thin call into the core (`services.axis`).

Why thin: what Axis may see and do is the core's decision (bot/axis_access.py: only what
the Claude fallback may see, never local-only content); this module turns a tool call
into that call, finds who is calling from the bearer token the SDK's middleware checked,
rate-limits per token, and answers every failure in French without a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Annotated

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from bot.axis_contract import AxisAccess, AxisRefused
from bot.web_contract import TokenGrant
from channels.axis_oauth import AxisAccessToken, AxisProvider
from channels.web_guard import RateLimiter, WebConfig

log = logging.getLogger(__name__)

SCOPE = "axis"
INSTRUCTIONS = (
    "Tu es connecté à Axi, l'assistant permanent d'ICI Dordogne (agences du Bugue et de "
    "Vergt), qui vit sur le serveur de Ludo. Axi n'est pas toi : tu es Axis, l'assistant "
    "Claude.ai de Ludo, son grand frère. Tu peux parler à Axi, chercher dans sa mémoire, "
    "lire les faits qu'il connaît, lire son briefing, ajouter une consigne ou une note, et "
    "lire puis acquitter les messages qu'Axi te laisse. Ce qui ne doit jamais quitter le "
    "serveur ne t'est jamais montré.")


def caller() -> TokenGrant:
    token = get_access_token()
    if not isinstance(token, AxisAccessToken) or SCOPE not in token.scopes:
        raise ToolError("Jeton absent ou sans la portée « axis ».")
    return token.grant()


async def answer(call: Awaitable[str], limiter: RateLimiter, grant: TokenGrant) -> str:
    """The core's answer, or a French error for the model to read (never a trace)."""
    if (wait := limiter.check(f"jeton:{grant.token_id}")) is not None:
        close = getattr(call, "close", None)
        if close is not None:
            close()  # never awaited: no "coroutine was never awaited" warning
        raise ToolError(f"Trop de demandes : réessaie dans {int(wait) + 1} seconde(s).")
    try:
        return await call
    except AxisRefused as exc:
        raise ToolError(str(exc)) from None
    except ToolError:
        raise
    except Exception:
        log.exception("an Axis tool failed")
        raise ToolError("Axi n'a pas pu traiter la demande (erreur interne, notée dans son "
                        "journal).") from None


def build_server(axis: AxisAccess, config: WebConfig, provider: AxisProvider, *,
                 issuer: str, resource_url: str) -> MCPServer:
    # MCPServer calls logging.basicConfig: a no-op when Axi configured logging already,
    # and it must not install a handler of its own when Axi has not (tests, benches)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = MCPServer(
        "axi", title="Axi — ICI Dordogne", instructions=INSTRUCTIONS, log_level="WARNING",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=issuer,  # type: ignore[arg-type]
            resource_server_url=resource_url,  # type: ignore[arg-type]
            required_scopes=[SCOPE], validate_token_resource=False,
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]),
            revocation_options=RevocationOptions(enabled=True)))
    root.handlers[:], root.level = handlers, level
    limiter = RateLimiter(config.rate_per_minute)
    timeout_s = config.reply_timeout_s

    @server.tool(description="Envoie un message à Axi et renvoie sa réponse (comme une "
                 "conversation). Si Axi n'a pas répondu à temps, sa réponse arrivera dans "
                 "ta boîte (lire_messages).", structured_output=False)
    async def parler_a_axi(
        message: Annotated[str, Field(description="Ce que tu dis à Axi, en français.")],
    ) -> str:
        grant = caller()
        return await answer(axis.talk(grant, message, timeout_s), limiter, grant)

    @server.tool(description="Cherche dans la mémoire d'Axi (souvenirs : conversations, "
                 "notes, événements) ; renvoie les plus pertinents.", structured_output=False)
    async def chercher_memoire(
        requete: Annotated[str, Field(description="Les mots à chercher.")],
        limite: Annotated[int, Field(description="Nombre de souvenirs (1 à 25).", ge=1,
                                     le=25)] = 10,
    ) -> str:
        grant = caller()
        return await answer(axis.search(requete, limite), limiter, grant)

    @server.tool(description="Les faits qu'Axi connaît sur un sujet (une personne, un bien, "
                 "un lieu), avec leur confiance ; ce qui n'est qu'affirmé est attribué.",
                 structured_output=False)
    async def faits_sur(
        sujet: Annotated[str, Field(description="Le sujet, par exemple « Ludo » ou "
                                    "« maison de Vergt ».")],
    ) -> str:
        grant = caller()
        return await answer(axis.facts(sujet), limiter, grant)

    @server.tool(description="Le briefing d'Axi : consignes, événements récents, ce qui "
                 "attend (questions pour Ludo, messages retenus), état, messages pour toi.",
                 structured_output=False)
    async def briefing() -> str:
        grant = caller()
        return await answer(axis.briefing(), limiter, grant)

    @server.tool(description="Ajoute une consigne permanente d'Axi (pour l'équipe, pas "
                 "pour les clients).", structured_output=False)
    async def ajouter_consigne(
        texte: Annotated[str, Field(description="La consigne, 4000 caractères au plus.")],
    ) -> str:
        grant = caller()
        return await answer(axis.add_consigne(grant, texte), limiter, grant)

    @server.tool(description="Enregistre une note dans la mémoire d'Axi.",
                 structured_output=False)
    async def ajouter_note(
        texte: Annotated[str, Field(description="Le contenu de la note.")],
    ) -> str:
        grant = caller()
        return await answer(axis.add_note(grant, texte), limiter, grant)

    @server.tool(description="Lit les messages qu'Axi t'a laissés (questions, résultats, "
                 "réponses arrivées après coup).", structured_output=False)
    async def lire_messages(
        non_lus_seulement: Annotated[bool, Field(
            description="Seulement ceux que tu n'as pas encore acquittés.")] = True,
    ) -> str:
        grant = caller()
        return await answer(axis.read_mailbox(non_lus_seulement), limiter, grant)

    @server.tool(description="Marque des messages d'Axi comme lus (par leurs numéros).",
                 structured_output=False)
    async def acquitter_messages(
        ids: Annotated[list[int], Field(description="Les numéros des messages lus.",
                                        max_length=500)],
    ) -> str:
        grant = caller()
        return await answer(axis.acknowledge(ids), limiter, grant)

    return server
