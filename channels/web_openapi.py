"""The OpenAPI 3.1 schema of the token API, published at `GET /openapi.json`, written by
hand from small pieces (the endpoints live in channels/web_api.py and channels/web_sse.py;
tests/channels/test_web_schema.py runs schemathesis against this schema and the real
server, so the two cannot drift apart unnoticed). Descriptions are French: people read
them."""

from __future__ import annotations

from typing import Any

from channels.web_guard import WebConfig

MAX_ID = 2**63 - 1
Schema = dict[str, Any]


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, *, headers: dict[str, Schema] | None = None) -> Schema:
    response = _json(_ref("schemas", "Erreur"), description)
    if headers:
        response["headers"] = headers
    return response


def _nullable(kind: str) -> Schema:
    return {"type": [kind, "null"]}


def _object(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required}


ID: Schema = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}
NOTICES: Schema = {"type": "array", "items": {"type": "string"},
                   "description": "Avis envoyés au sujet du message (attente, abandon…)."}

SCHEMAS: dict[str, Schema] = {
    "Erreur": _object({
        "error": {"type": "string", "description": "Code de l'erreur, pour les programmes."},
        "message": {"type": "string", "description": "L'explication, en français."}}),
    "Moi": _object({"name": {"type": "string"}, "relation": {"type": "string"},
                    "scope": {"type": "string"}}),
    "DemandeChat": {
        "type": "object", "required": ["message"],
        "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": 20_000,
                        "pattern": r"[^\s\u0000]", "description": "Le message pour Axi."},
            "local_only": {"type": "boolean", "default": False,
                           "description": "Ne jamais quitter le serveur : pas de repli sur "
                                          "Claude pour ce message (il attend le modèle "
                                          "local)."}}},
    "Reponse": _object({
        "reply": {**_nullable("string"),
                  "description": "La réponse d'Axi ; null quand Axi ne répondra pas."},
        "message_id": ID, "reply_id": {**_nullable("integer"), "format": "int64"},
        "notices": NOTICES}),
    "EnAttente": _object({
        "message_id": ID, "state": {"type": "string"}, "notices": NOTICES,
        "status_url": {"type": "string", "description": "Où lire la réponse plus tard : "
                                                        "URL relative à celle de la requête "
                                                        "(messages/ID, soit /api/messages/ID)."}}),
    "Issue": _object({
        "message_id": ID,
        "state": {"type": "string",
                  "description": "en_attente, traite, ignore, erreur, abandonne, retenu…"},
        "reply": _nullable("string"), "reply_id": {**_nullable("integer"), "format": "int64"},
        "notices": NOTICES}),
    "ElementHistorique": _object({
        "id": ID, "direction": {"type": "string", "enum": ["in", "out"]},
        "text": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
        "in_reply_to": {**_nullable("integer"), "format": "int64"},
        "kind": {"type": "string", "enum": ["message", "notice"]}}),
    "Historique": _object({
        "messages": {"type": "array", "items": _ref("schemas", "ElementHistorique")},
        "next_before": {**_nullable("integer"), "format": "int64",
                        "description": "À passer en `before` pour la page suivante ; null "
                                       "quand il n'y en a plus."}}),
}

SSE_DESCRIPTION = (
    "Avec `Accept: text/event-stream` : des Server-Sent Events dont chaque `data:` est un "
    "objet JSON — `accepted` {message_id} d'abord ; `notice` {text} pour chaque avis ; "
    "`chunk` {text} les morceaux de la réponse à mesure qu'elle s'écrit ; `restart` {} "
    "quand la réponse reprend de zéro (oublier les morceaux reçus) ; `reply` {reply, "
    "message_id, reply_id, notices} en dernier ; ou `pending` {message_id} quand l'attente "
    "est finie sans réponse (lire alors `api/messages/ID`). Un commentaire `: keep-alive` "
    "passe au moins toutes les 15 s tant que rien d'autre n'est envoyé.")


def _responses(config: WebConfig) -> dict[str, Schema]:
    retry = {"Retry-After": {"description": "Secondes à attendre.",
                             "schema": {"type": "integer", "minimum": 1}}}
    www = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    kb = config.max_request_bytes // 1024
    return {
        "MauvaiseRequete": _error("Requête invalide (message en français)."),
        "NonAuthentifie": _error("Jeton absent, inconnu, révoqué ou expiré.", headers=www),
        "Interdit": _error("Jeton d'une autre portée que `chat`."),
        "Introuvable": _error("Aucun message de cette personne ne porte ce numéro."),
        "DelaiRequete": _error("Le corps de la requête a mis trop de temps à arriver."),
        "TropVolumineux": _error(f"Requête trop volumineuse (au plus {kb} Ko)."),
        "TypeNonPrisEnCharge": _error("Le corps doit être du JSON."),
        "TropDeRequetes": _error(
            f"Trop de requêtes : {config.rate_per_minute} envois par minute par jeton et par "
            f"adresse IP ({config.rate_per_minute * 10} lectures).", headers=retry),
        "Indisponible": _error("Axi met trop de temps à répondre ; réessayer plus tard."),
    }


def _common(*codes: str) -> dict[str, Schema]:
    names = {"400": "MauvaiseRequete", "401": "NonAuthentifie", "403": "Interdit",
             "404": "Introuvable", "408": "DelaiRequete", "413": "TropVolumineux",
             "415": "TypeNonPrisEnCharge", "429": "TropDeRequetes", "503": "Indisponible"}
    return {code: _ref("responses", names[code]) for code in codes}


GUARDED = ("401", "403", "413", "429", "503")


def _paths() -> dict[str, Schema]:
    return {
        "/api/me": {"get": {
            "operationId": "moi", "summary": "À qui appartient le jeton.",
            "responses": {"200": _json(_ref("schemas", "Moi"), "La personne du jeton."),
                          **_common(*GUARDED)}}},
        "/api/chat": {"post": {
            "operationId": "ecrire", "summary": "Écrire à Axi.",
            "description": "Le message passe par la boîte de réception d'Axi comme sur "
                           "tous les canaux, puis la réponse est attendue. " + SSE_DESCRIPTION,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("schemas", "DemandeChat")}}},
            "responses": {
                "200": {"description": "La réponse d'Axi (ou null : Axi ne répondra pas) ; "
                                       "ou le flux d'événements.",
                        "content": {"application/json": {"schema": _ref("schemas", "Reponse")},
                                    "text/event-stream": {"schema": {"type": "string"}}}},
                "202": _json(_ref("schemas", "EnAttente"),
                             "Pas encore de réponse : la lire plus tard à `status_url`."),
                **_common("400", "408", "415", *GUARDED)}}},
        "/api/messages/{message_id}": {"get": {
            "operationId": "issue", "summary": "Ce qu'est devenu un message envoyé.",
            "parameters": [{"name": "message_id", "in": "path", "required": True,
                            "schema": ID}],
            "responses": {"200": _json(_ref("schemas", "Issue"), "L'état et la réponse."),
                          **_common("404", *GUARDED)}}},
        "/api/history": {"get": {
            "operationId": "historique", "summary": "La conversation, du plus récent au "
                                                    "plus ancien, par pages.",
            "parameters": [
                {"name": "before", "in": "query", "required": False, "schema": ID,
                 "description": "Messages plus anciens que celui-ci."},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 30}}],
            "responses": {"200": _json(_ref("schemas", "Historique"), "Une page."),
                          **_common("400", *GUARDED)}}},
        "/openapi.json": {"get": {
            "operationId": "schema", "summary": "Ce schéma.", "security": [],
            "responses": {"200": _json({"type": "object"}, "Le schéma OpenAPI.")}}},
    }


def schema(config: WebConfig) -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Axi — API à jeton", "version": "1.0.0",
                 "description": "Écrire à Axi et lire ses réponses avec un jeton de portée "
                                "`chat` (`axi tokens create PERSONNE`). URL relatives à "
                                "l'origine du serveur. Erreurs : `{\"error\": code, "
                                "\"message\": texte en français}`."},
        "security": [{"jeton": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"jeton": {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer <jeton>` (un jeton de portée `chat`)."}},
            "schemas": SCHEMAS,
            "responses": _responses(config),
        },
    }
