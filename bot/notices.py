"""The short French notices Axi sends about a message it has not (yet) answered. Pure.

A notice is never part of the conversation's history: it says what happens to the
message (waiting for a model, too long for the only model allowed, given up by the
operator), in the person's form of address.
"""

from __future__ import annotations

from bot.policy import Interlocutor
from llm.errors import (
    BudgetExceeded,
    LLMError,
    LocalOnlyUnavailable,
    LocalReserved,
    LocalTooBusy,
)


def _say(who: Interlocutor, tu: str, vous: str) -> str:
    return tu if who.form == "tu" else vous


def waiting_notice(who: Interlocutor, exc: LLMError) -> str:
    if isinstance(exc, BudgetExceeded):
        cause = "mon budget de réflexion du mois est épuisé"
    elif isinstance(exc, LocalOnlyUnavailable):
        cause = "mon moteur local est indisponible et ce message ne doit pas quitter le serveur"
    else:
        cause = "mon moteur de réflexion est momentanément indisponible"
    return _say(who,
                f"J'ai bien reçu ton message, mais {cause}. "
                "Je te réponds dès que possible, sans que tu aies à le renvoyer.",
                f"J'ai bien reçu votre message, mais {cause}. "
                "Je vous réponds dès que possible, sans que vous ayez à le renvoyer.")


def busy_notice(who: Interlocutor, reason: str = LocalTooBusy.reason) -> str:
    """Why this reply comes from the fallback model: the local one is busy, or kept for
    the agency's team (AXI_LOCAL_RESERVE_S)."""
    why = ("Le modèle du serveur de l'agence est occupé par l'équipe en ce moment"
           if reason == LocalReserved.reason
           else "Le modèle du serveur de l'agence est très occupé en ce moment")
    return _say(who,
                f"{why} : pour ne pas te faire attendre, je te réponds avec mon modèle de "
                "secours.",
                f"{why} : pour ne pas vous faire attendre, je vous réponds avec mon modèle de "
                "secours.")


def duration_text(seconds: float) -> str:
    """'environ 40 secondes', 'environ 3 minutes' (a wait, said to a person)."""
    if seconds < 90:
        return f"environ {max(10, round(seconds / 10) * 10)} secondes"
    if seconds < 90 * 60:
        return f"environ {round(seconds / 60)} minutes"
    hours = round(seconds / 3600)
    return f"environ {hours} heure{'s' if hours > 1 else ''}"


def local_wait_notice(who: Interlocutor, seconds: float) -> str:
    """A message that must stay on the server, and the local model is busy: how long."""
    when = duration_text(seconds)
    return _say(who,
                f"Je prépare ta réponse sur le serveur de l'agence, sans rien envoyer ailleurs : "
                f"il me faudra {when}.",
                f"Je prépare votre réponse sur le serveur de l'agence, sans rien envoyer "
                f"ailleurs : il me faudra {when}.")


def too_large_notice(who: Interlocutor, *, must_stay: bool) -> str:
    """The message cannot fit the local model, and no other model may read it."""
    why = (" (il ne doit pas quitter le serveur)" if must_stay
           else " (aucun autre moteur n'est disponible)")
    return _say(who,
                f"Ton message est trop long pour mon moteur local, le seul qui puisse le lire"
                f"{why}. Peux-tu le raccourcir ou le découper en plusieurs messages ?",
                f"Votre message est trop long pour mon moteur local, le seul qui puisse le lire"
                f"{why}. Pouvez-vous le raccourcir ou le découper en plusieurs messages ?")


def far_too_large_notice(who: Interlocutor) -> str:
    """The message cannot fit any model at all."""
    return _say(who,
                "Ton message est trop long pour que je puisse le lire en une fois. "
                "Peux-tu le découper en plusieurs messages plus courts ?",
                "Votre message est trop long pour que je puisse le lire en une fois. "
                "Pouvez-vous le découper en plusieurs messages plus courts ?")


def dropped_notice(form: str) -> str:
    """The operator gave the message up (`axi inbox drop`)."""
    if form == "tu":
        return ("Je n'ai pas pu traiter ton dernier message et je l'ai mis de côté. "
                "Si c'est encore utile, renvoie-le-moi, reformulé si besoin.")
    return ("Je n'ai pas pu traiter votre dernier message et je l'ai mis de côté. "
            "Si c'est encore utile, renvoyez-le-moi, reformulé si besoin.")


def attachment_notice(who: Interlocutor, names: list[str], *, kept: bool = False) -> str:
    """A message with attachments and no text: Axi keeps them but cannot read them yet."""
    shown = ", ".join(n for n in names if n) or "ta pièce jointe"
    many = len([n for n in names if n]) > 1
    keep = ("" if not kept else " — je garde les fichiers" if many
            else " — je garde le fichier")
    return _say(who,
                f"J'ai bien reçu {shown}{keep}, mais je ne sais pas encore lire les pièces "
                "jointes. Écris-moi ce que tu veux que j'en fasse.",
                f"J'ai bien reçu {shown.replace('ta pièce', 'votre pièce')}{keep}, mais "
                "je ne sais pas encore lire les pièces jointes. Écrivez-moi ce que vous "
                "souhaitez que j'en fasse.")


STRANGER_NOTICE = (
    "Bonjour ! Je suis Axi, l'assistant privé de l'agence ICI Dordogne. Je ne vous connais "
    "pas encore : j'ai prévenu l'équipe, qui reviendra vers vous. Pour une question sur un "
    "bien, vous pouvez aussi écrire à l'agence ou passer nous voir au Bugue ou à Vergt.")
"""The one answer an unknown sender on a paired channel gets (nothing from memory)."""


def pairing_question(channel: str, address: str, name: str | None, first_text: str) -> str:
    """What Ludo reads when someone unknown writes to Axi (tutoiement)."""
    who = f"« {name} »" if name else "quelqu'un d'inconnu"
    excerpt = " ".join(first_text.split())[:200] or "(pas de texte)"
    return (f"{who} m'écrit sur {channel} (identifiant {address}) et je ne le connais pas. "
            f"Son message : « {excerpt} ». Qui est-ce ? (Ce que dit cette personne n'est "
            "pas une preuve de son identité.)")
