"""The tu/vous guard on French replies: detection, deterministic fixes, honest doubts."""

from __future__ import annotations

import pytest

from bot.tutoiement import detect_address, form_for, guard_reply, rewrite_needed, to_tu, to_vous
from bot.tutoiement_verbs import pl_to_sg, sg_to_pl

VOUS_TO_TU = [
    ("Vous pouvez passer à l'agence demain.", "Tu peux passer à l'agence demain."),
    ("Je vous envoie le compromis ce soir.", "Je t'envoie le compromis ce soir."),
    ("N'hésitez pas à me rappeler.", "N'hésite pas à me rappeler."),
    ("Votre maison est bien placée.", "Ta maison est bien placée."),
    ("Pouvez-vous me confirmer l'heure ?", "Peux-tu me confirmer l'heure ?"),
    ("Si vous avez besoin, dites-moi.", "Si tu as besoin, dis-moi."),
    ("Je vous ai envoyé votre dossier.", "Je t'ai envoyé ton dossier."),
    ("Vous vous souvenez de la grange de Vergt ?", "Tu te souviens de la grange de Vergt ?"),
    ("Merci à vous, et bonne journée !", "Merci à toi, et bonne journée !"),
    ("Vous trouverez vos documents dans votre espace.",
     "Tu trouveras tes documents dans ton espace."),
    ("Il faut que vous soyez là à 10 h.", "Il faut que tu sois là à 10 h."),
    ("Vous n'avez pas encore signé le mandat.", "Tu n'as pas encore signé le mandat."),
    ("Vous pourriez appeler la mairie.", "Tu pourrais appeler la mairie."),
    ("Pour vous aider, je peux préparer une estimation.",
     "Pour t'aider, je peux préparer une estimation."),
    ("Contactez-nous au bureau du Bugue.", "Contacte-nous au bureau du Bugue."),
    ("S'il vous plaît, vérifiez votre adresse.", "S'il te plaît, vérifie ton adresse."),
    ("Vous aviez raison pour le DPE.", "Tu avais raison pour le DPE."),
    ("Vous préférez la visite le matin ?", "Tu préfères la visite le matin ?"),
    ("Vous finissez à quelle heure ?", "Tu finis à quelle heure ?"),
    ("Renseignez-vous à la mairie.", "Renseigne-toi à la mairie."),
    ("Vous attendez la réponse du notaire.", "Tu attends la réponse du notaire."),
    ("Comprenez-vous le compromis ?", "Comprends-tu le compromis ?"),
    ("Je passe chez vous à 15 h.", "Je passe chez toi à 15 h."),
    ("Vous le recevrez lundi.", "Tu le recevras lundi."),
]

TU_TO_VOUS = [
    ("Tu peux passer à l'agence demain.", "Vous pouvez passer à l'agence demain."),
    ("Je t'envoie le compromis ce soir.", "Je vous envoie le compromis ce soir."),
    ("N'hésite pas à me rappeler.", "N'hésitez pas à me rappeler."),
    ("Ta maison est bien placée.", "Votre maison est bien placée."),
    ("Peux-tu me confirmer l'heure ?", "Pouvez-vous me confirmer l'heure ?"),
    ("Si tu as besoin, dis-moi.", "Si vous avez besoin, dites-moi."),
    ("Tu te souviens de la grange ?", "Vous vous souvenez de la grange ?"),
    ("Merci à toi !", "Merci à vous !"),
    ("Tu trouveras tes documents dans ton espace.",
     "Vous trouverez vos documents dans votre espace."),
    ("Il faut que tu sois là.", "Il faut que vous soyez là."),
    ("Tu n'as pas encore signé.", "Vous n'avez pas encore signé."),
    ("Tu pourrais appeler la mairie.", "Vous pourriez appeler la mairie."),
    ("Envoie-moi le plan.", "Envoyez-moi le plan."),
    ("Tiens-moi au courant.", "Tenez-moi au courant."),
    ("Tu préfères le matin ?", "Vous préférez le matin ?"),
    ("Tu es libre jeudi ?", "Vous êtes libre jeudi ?"),
    ("Le tien est plus grand.", "Le vôtre est plus grand."),
    ("Tu attends la réponse du notaire.", "Vous attendez la réponse du notaire."),
]


@pytest.mark.parametrize(("vous", "tu"), VOUS_TO_TU)
def test_vous_is_detected_and_rewritten_to_tu(vous: str, tu: str) -> None:
    assert detect_address(vous).form == "vous"
    result = guard_reply(vous, "tu")
    assert result.text == tu
    assert result.changed and result.found == "vous" and not result.needs_llm_rewrite
    assert detect_address(tu).form == "tu"
    assert guard_reply(tu, "tu") == guard_reply(tu, "tu")  # deterministic
    assert not guard_reply(tu, "tu").changed


@pytest.mark.parametrize(("tu", "vous"), TU_TO_VOUS)
def test_tu_is_detected_and_rewritten_to_vous(tu: str, vous: str) -> None:
    assert detect_address(tu).form == "tu"
    result = guard_reply(tu, "vous")
    assert result.text == vous
    assert result.changed and result.ok
    assert not guard_reply(vous, "vous").changed


@pytest.mark.parametrize("text", [
    "Le rendez-vous est à 14 h au Bugue.",  # a noun
    "Il a dit « vous pouvez venir quand vous voulez ».",  # quoted
    "Le client m'a écrit : \"Tu peux baisser le prix ?\"",  # quoted
    "Je vais tutoyer Julie, c'est plus simple.",  # tu inside a word
    "Le toit de la grange est refait.",  # toi inside a word
    "Il l'a dit sur un ton calme.",  # ton, the noun
    "Il s'est tu pendant la visite.",  # participle of se taire
    "Le bien est situé chez Martin, rue de Rodez.",  # -ez words that are not verbs
    "La maison fait 120 m² et le DPE est en classe D.",
])
def test_no_false_positives(text: str) -> None:
    assert detect_address(text).form == "none", detect_address(text)
    assert guard_reply(text, "tu").text == text
    assert guard_reply(text, "vous").text == text


def test_letter_draft_for_a_client_is_left_alone_when_talking_to_ludo() -> None:
    reply = ("Voici un brouillon, tu me dis si ça te va :\n\nMadame,\nJe vous remercie pour "
             "votre visite. Vous pouvez me joindre au bureau.\nCordialement,\nLudo\n\n"
             "Tu veux que je l'envoie ?")
    analysis = detect_address(reply)
    assert analysis.form == "tu" and analysis.skipped_quotes
    result = guard_reply(reply, "tu")
    assert result.text == reply and result.ok


def test_plural_vous_is_ambiguous_for_a_tutoye_reader() -> None:
    reply = "Vous pouvez venir tous les deux jeudi ?"
    result = guard_reply(reply, "tu")
    assert result.text == reply and not result.changed and result.needs_llm_rewrite


def test_unknown_gender_asks_for_an_llm_rewrite() -> None:
    result = guard_reply("Votre canapé est prêt.", "tu")
    assert result.text == "Ton canapé est prêt."  # best effort
    assert result.needs_llm_rewrite and any("genre" in n for n in result.notes)


def test_mixed_reply_is_fixed_whole() -> None:
    text = "Salut Ludo ! Vous pouvez regarder ton mail : je vous ai envoyé le DPE."
    assert detect_address(text).form == "mixed"
    result = guard_reply(text, "tu")
    assert result.text == "Salut Ludo ! Tu peux regarder ton mail : je t'ai envoyé le DPE."
    assert result.ok


def test_quoted_text_is_never_rewritten() -> None:
    text = "Tu peux lui répondre « Vous pouvez visiter samedi » si ça te va."
    assert to_vous(text).text == "Vous pouvez lui répondre « Vous pouvez visiter samedi » si ça vous va."
    assert to_tu(text).text == text


def test_typographic_apostrophe_is_kept() -> None:
    assert to_tu("Je vous envoie l’adresse.").text == "Je t’envoie l’adresse."


@pytest.mark.parametrize(("relation", "style", "form"), [
    ("créateur", None, "tu"), ("administrateur", None, "tu"), ("équipe", None, "tu"),
    ("client", None, "vous"), ("prospect", None, "vous"), (None, None, "vous"),
    ("équipe", "vouvoie-la, elle préfère", "vous"), ("client", "on se tutoie", "tu"),
])
def test_form_for_relation(relation: str | None, style: str | None, form: str) -> None:
    assert form_for(relation, style) == form


def test_rewrite_needed_by_relation() -> None:
    assert rewrite_needed("Vous pouvez passer.", "créateur")
    assert not rewrite_needed("Tu peux passer.", "créateur")
    assert rewrite_needed("Tu peux passer.", "client")
    assert rewrite_needed("Tu peux passer.", None)  # an unknown stranger is vouvoyé
    assert not rewrite_needed("Le rendez-vous est fixé.", "client")


@pytest.mark.parametrize(("pl", "sg"), [
    ("pouvez", "peux"), ("regardez", "regardes"), ("envoyez", "envoies"), ("appelez", "appelles"),
    ("achetez", "achètes"), ("préférez", "préfères"), ("finissez", "finis"),
    ("répondez", "réponds"), ("prenez", "prends"), ("obtenez", "obtiens"),
    ("trouverez", "trouveras"), ("pourrez", "pourras"), ("voudriez", "voudrais"),
    ("aviez", "avais"), ("vérifiez", "vérifies"), ("recevez", "reçois"), ("préparez", "prépares"),
])
def test_verb_tables_round_trip(pl: str, sg: str) -> None:
    assert pl_to_sg(pl) == sg
    assert sg_to_pl(sg) == pl
