"""A MINDS-14-style banking intent set: templated utterances in five languages.

    rows = intent_utterances(("en", "de"))  # [{"id", "text", "language", "label", ...}]

Each intent has four hand-written templates per language; a template's
`{slot}` is filled with every value of that slot in the language (all
combinations), so a template gives 1 to 9 sentences. Templates are split,
not sentences: one template of each intent (`test_template`, the same in
every language) is the test split, the others train, so no test sentence
(nor its wording) is seen in training. Slot values carry their own articles and prepositions so each
language's grammar agrees whatever the value.
"""

import itertools
import string

LANGUAGES = ("de", "en", "es", "fr", "it")
TEMPLATES_PER_INTENT = 4

SLOTS = {
    "en": {
        "account": ("current", "savings"),
        "card": ("my credit card", "my debit card"),
        "amount": ("fifty euros", "two hundred euros", "a thousand euros"),
        "destination": ("to Spain", "to Japan", "to Canada"),
        "city": ("Leeds", "Bristol", "Glasgow"),
        "bill": ("my electricity bill", "my phone bill", "my water bill"),
        "when": ("today", "tomorrow", "on Friday"),
        "past": ("today", "yesterday", "on Monday"),
    },
    "de": {
        "account": ("Girokonto", "Sparkonto"),
        "card": ("meine Kreditkarte", "meine Debitkarte"),
        "amount": ("fünfzig Euro", "zweihundert Euro", "tausend Euro"),
        "destination": ("nach Spanien", "nach Japan", "nach Kanada"),
        "city": ("Hamburg", "Köln", "Leipzig"),
        "bill": ("meine Stromrechnung", "meine Handyrechnung", "meine Wasserrechnung"),
        "when": ("heute", "morgen", "am Freitag"),
        "past": ("heute", "gestern", "am Montag"),
    },
    "es": {
        "account": ("corriente", "de ahorro"),
        "card": ("mi tarjeta de crédito", "mi tarjeta de débito"),
        "amount": ("cincuenta euros", "doscientos euros", "mil euros"),
        "destination": ("a España", "a Japón", "a Canadá"),
        "city": ("Sevilla", "Valencia", "Bilbao"),
        "bill": ("la factura de la luz", "la factura del teléfono", "la factura del agua"),
        "when": ("hoy", "mañana", "el viernes"),
        "past": ("hoy", "ayer", "el lunes"),
    },
    "fr": {
        "account": ("courant", "épargne"),
        "card": ("ma carte de crédit", "ma carte bancaire"),
        "amount": ("cinquante euros", "deux cents euros", "mille euros"),
        "destination": ("en Espagne", "au Japon", "au Canada"),
        "city": ("Lyon", "Nantes", "Lille"),
        "bill": ("ma facture d'électricité", "ma facture de téléphone", "ma facture d'eau"),
        "when": ("aujourd'hui", "demain", "vendredi"),
        "past": ("aujourd'hui", "hier", "lundi"),
    },
    "it": {
        "account": ("corrente", "di risparmio"),
        "card": ("la mia carta di credito", "la mia carta di debito"),
        "amount": ("cinquanta euro", "duecento euro", "mille euro"),
        "destination": ("in Spagna", "in Giappone", "in Canada"),
        "city": ("Torino", "Bologna", "Firenze"),
        "bill": ("la bolletta della luce", "la bolletta del telefono", "la bolletta dell'acqua"),
        "when": ("oggi", "domani", "venerdì"),
        "past": ("oggi", "ieri", "lunedì"),
    },
}

TEMPLATES = {
    "balance": {
        "en": (
            "What is the balance of my {account} account?",
            "How much money do I have left?",
            "Can you tell me how much is in my {account} account?",
            "I would like to check my balance, please.",
        ),
        "de": (
            "Wie hoch ist der Kontostand auf meinem {account}?",
            "Wie viel Geld habe ich noch?",
            "Können Sie mir sagen, wie viel auf meinem {account} ist?",
            "Ich möchte bitte meinen Kontostand abfragen.",
        ),
        "es": (
            "¿Cuál es el saldo de mi cuenta {account}?",
            "¿Cuánto dinero me queda?",
            "¿Me puede decir cuánto hay en mi cuenta {account}?",
            "Quisiera consultar mi saldo, por favor.",
        ),
        "fr": (
            "Quel est le solde de mon compte {account} ?",
            "Combien d'argent me reste-t-il ?",
            "Pouvez-vous me dire combien il y a sur mon compte {account} ?",
            "Je voudrais connaître mon solde, s'il vous plaît.",
        ),
        "it": (
            "Qual è il saldo del mio conto {account}?",
            "Quanti soldi mi sono rimasti?",
            "Mi può dire quanto c'è sul mio conto {account}?",
            "Vorrei controllare il mio saldo, per favore.",
        ),
    },
    "card_issue": {
        "en": (
            "{card} does not work at the shop.",
            "My card was declined {past} and I do not know why.",
            "The chip on {card} seems to be broken.",
            "Why is the cash machine rejecting {card}?",
        ),
        "de": (
            "{card} funktioniert im Geschäft nicht.",
            "Meine Karte wurde {past} abgelehnt und ich weiß nicht warum.",
            "Ich glaube, {card} hat einen kaputten Chip.",
            "Warum lehnt der Geldautomat {card} ab?",
        ),
        "es": (
            "{card} no funciona en la tienda.",
            "Me rechazaron la tarjeta {past} y no sé por qué.",
            "El chip de {card} parece estar roto.",
            "¿Por qué el cajero automático rechaza {card}?",
        ),
        "fr": (
            "{card} ne fonctionne pas dans le magasin.",
            "Ma carte a été refusée {past} et je ne sais pas pourquoi.",
            "La puce de {card} semble être cassée.",
            "Pourquoi le distributeur refuse-t-il {card} ?",
        ),
        "it": (
            "{card} non funziona nel negozio.",
            "La mia carta è stata rifiutata {past} e non so perché.",
            "Credo che {card} abbia il chip rotto.",
            "Perché il bancomat rifiuta {card}?",
        ),
    },
    "address_change": {
        "en": (
            "I have moved to {city} and need to update my address.",
            "How do I change the address on my account?",
            "Please send my letters to my new home in {city}.",
            "I want to register a new address with the bank.",
        ),
        "de": (
            "Ich bin nach {city} gezogen und muss meine Adresse ändern.",
            "Wie ändere ich die Adresse in meinem Konto?",
            "Bitte schicken Sie meine Briefe an meine neue Wohnung in {city}.",
            "Ich möchte der Bank eine neue Anschrift mitteilen.",
        ),
        "es": (
            "Me he mudado a {city} y tengo que actualizar mi dirección.",
            "¿Cómo cambio la dirección de mi cuenta?",
            "Por favor, envíen mis cartas a mi nueva casa en {city}.",
            "Quiero registrar una dirección nueva en el banco.",
        ),
        "fr": (
            "J'ai déménagé à {city} et je dois mettre à jour mon adresse.",
            "Comment est-ce que je change l'adresse de mon compte ?",
            "Envoyez mes lettres à mon nouveau logement à {city}, s'il vous plaît.",
            "Je veux enregistrer une nouvelle adresse auprès de la banque.",
        ),
        "it": (
            "Mi sono trasferito a {city} e devo aggiornare il mio indirizzo.",
            "Come cambio l'indirizzo del mio conto?",
            "Per favore mandate le mie lettere alla mia nuova casa a {city}.",
            "Voglio registrare un nuovo indirizzo presso la banca.",
        ),
    },
    "pay_bill": {
        "en": (
            "I need to pay {bill} {when}.",
            "Can I pay {bill} from my {account} account?",
            "Please pay {amount} for {bill}.",
            "How do I settle a bill through the bank?",
        ),
        "de": (
            "Ich muss {when} {bill} bezahlen.",
            "Kann ich {bill} von meinem {account} bezahlen?",
            "Bitte überweisen Sie {amount} für {bill}.",
            "Wie begleiche ich eine Rechnung über die Bank?",
        ),
        "es": (
            "Tengo que pagar {bill} {when}.",
            "¿Puedo pagar {bill} desde mi cuenta {account}?",
            "Por favor, paguen {amount} de {bill}.",
            "¿Cómo pago un recibo a través del banco?",
        ),
        "fr": (
            "Je dois payer {bill} {when}.",
            "Est-ce que je peux payer {bill} depuis mon compte {account} ?",
            "Veuillez payer {amount} pour {bill}.",
            "Comment est-ce que je règle une facture par la banque ?",
        ),
        "it": (
            "Devo pagare {bill} {when}.",
            "Posso pagare {bill} dal mio conto {account}?",
            "Per favore pagate {amount} per {bill}.",
            "Come posso saldare una bolletta tramite la banca?",
        ),
    },
    "freeze": {
        "en": (
            "Please freeze {card} right away.",
            "Someone stole my wallet, block my card.",
            "I lost {card}, can you block it?",
            "Stop all payments with my card immediately.",
        ),
        "de": (
            "Bitte sperren Sie sofort {card}.",
            "Jemand hat meine Geldbörse gestohlen, sperren Sie meine Karte.",
            "Ich habe {card} verloren, können Sie sie sperren?",
            "Stoppen Sie sofort alle Zahlungen mit meiner Karte.",
        ),
        "es": (
            "Por favor, bloqueen {card} ahora mismo.",
            "Me han robado la cartera, bloqueen mi tarjeta.",
            "He perdido {card}, ¿la pueden bloquear?",
            "Detengan todos los pagos con mi tarjeta inmediatamente.",
        ),
        "fr": (
            "Bloquez {card} tout de suite, s'il vous plaît.",
            "On m'a volé mon portefeuille, bloquez ma carte.",
            "J'ai perdu {card}, pouvez-vous la bloquer ?",
            "Arrêtez immédiatement tous les paiements avec ma carte.",
        ),
        "it": (
            "Per favore bloccate subito {card}.",
            "Mi hanno rubato il portafoglio, bloccate la mia carta.",
            "Ho perso {card}, potete bloccarla?",
            "Fermate immediatamente tutti i pagamenti con la mia carta.",
        ),
    },
    "abroad": {
        "en": (
            "I am travelling {destination} {when}, will my card work there?",
            "Do I need to tell you before I go abroad?",
            "Can I use {card} {destination}?",
            "What are the fees for paying in a foreign country?",
        ),
        "de": (
            "Ich reise {when} {destination}, funktioniert meine Karte dort?",
            "Muss ich Ihnen Bescheid geben, bevor ich ins Ausland fahre?",
            "Kann ich {card} {destination} mitnehmen und benutzen?",
            "Welche Gebühren fallen für Zahlungen im Ausland an?",
        ),
        "es": (
            "Viajo {destination} {when}, ¿funcionará allí mi tarjeta?",
            "¿Tengo que avisarles antes de irme al extranjero?",
            "¿Puedo usar {card} si viajo {destination}?",
            "¿Qué comisiones hay por pagar en otro país?",
        ),
        "fr": (
            "Je pars {destination} {when}, est-ce que ma carte marchera là-bas ?",
            "Dois-je vous prévenir avant de partir à l'étranger ?",
            "Puis-je utiliser {card} {destination} ?",
            "Quels sont les frais pour payer dans un pays étranger ?",
        ),
        "it": (
            "Vado {destination} {when}, la mia carta funzionerà lì?",
            "Devo avvisarvi prima di andare all'estero?",
            "Posso usare {card} {destination}?",
            "Quali sono le commissioni per pagare in un paese straniero?",
        ),
    },
    "joint_account": {
        "en": (
            "My partner and I want to open a joint account.",
            "Can I add my wife to my {account} account?",
            "How do we set up an account for both of us?",
            "I would like to share my account with my husband.",
        ),
        "de": (
            "Mein Partner und ich möchten ein Gemeinschaftskonto eröffnen.",
            "Kann ich meine Frau zu meinem {account} hinzufügen?",
            "Wie richten wir ein Konto für uns beide ein?",
            "Ich möchte mein Konto mit meinem Mann teilen.",
        ),
        "es": (
            "Mi pareja y yo queremos abrir una cuenta conjunta.",
            "¿Puedo añadir a mi mujer a mi cuenta {account}?",
            "¿Cómo abrimos una cuenta para los dos?",
            "Me gustaría compartir mi cuenta con mi marido.",
        ),
        "fr": (
            "Mon conjoint et moi voulons ouvrir un compte joint.",
            "Puis-je ajouter ma femme à mon compte {account} ?",
            "Comment ouvrir un compte pour nous deux ?",
            "J'aimerais partager mon compte avec mon mari.",
        ),
        "it": (
            "Io e il mio compagno vogliamo aprire un conto cointestato.",
            "Posso aggiungere mia moglie al mio conto {account}?",
            "Come apriamo un conto per tutti e due?",
            "Vorrei condividere il mio conto con mio marito.",
        ),
    },
    "latest_transactions": {
        "en": (
            "Show me the last payments on my {account} account.",
            "What did I spend money on this week?",
            "I want to see my recent transactions.",
            "Which payments went out of my account {past}?",
        ),
        "de": (
            "Zeigen Sie mir die letzten Zahlungen auf meinem {account}.",
            "Wofür habe ich diese Woche Geld ausgegeben?",
            "Ich möchte meine letzten Umsätze sehen.",
            "Welche Zahlungen sind {past} von meinem Konto abgegangen?",
        ),
        "es": (
            "Muéstreme los últimos pagos de mi cuenta {account}.",
            "¿En qué he gastado dinero esta semana?",
            "Quiero ver mis movimientos recientes.",
            "¿Qué pagos salieron de mi cuenta {past}?",
        ),
        "fr": (
            "Montrez-moi les derniers paiements de mon compte {account}.",
            "Qu'est-ce que j'ai dépensé cette semaine ?",
            "Je veux voir mes opérations récentes.",
            "Quels paiements sont sortis de mon compte {past} ?",
        ),
        "it": (
            "Mi mostri gli ultimi pagamenti del mio conto {account}.",
            "Per che cosa ho speso soldi questa settimana?",
            "Voglio vedere i miei movimenti recenti.",
            "Quali pagamenti sono usciti dal mio conto {past}?",
        ),
    },
    "cash_deposit": {
        "en": (
            "I want to deposit {amount} in cash.",
            "Where can I pay cash into my account?",
            "Can I put {amount} into my {account} account at the branch?",
            "How long does a cash deposit take to show up?",
        ),
        "de": (
            "Ich möchte {amount} in bar einzahlen.",
            "Wo kann ich Bargeld auf mein Konto einzahlen?",
            "Kann ich {amount} in der Filiale auf mein {account} einzahlen?",
            "Wie lange dauert es, bis eine Bareinzahlung sichtbar ist?",
        ),
        "es": (
            "Quiero ingresar {amount} en efectivo.",
            "¿Dónde puedo ingresar dinero en efectivo en mi cuenta?",
            "¿Puedo ingresar {amount} en mi cuenta {account} en la oficina?",
            "¿Cuánto tarda en aparecer un ingreso en efectivo?",
        ),
        "fr": (
            "Je veux déposer {amount} en espèces.",
            "Où puis-je déposer de l'argent liquide sur mon compte ?",
            "Puis-je verser {amount} sur mon compte {account} à l'agence ?",
            "Combien de temps faut-il pour qu'un dépôt d'espèces apparaisse ?",
        ),
        "it": (
            "Voglio versare {amount} in contanti.",
            "Dove posso versare contanti sul mio conto?",
            "Posso versare {amount} sul mio conto {account} in filiale?",
            "Quanto tempo ci vuole perché un versamento in contanti compaia?",
        ),
    },
    "app_error": {
        "en": (
            "The banking app keeps crashing when I log in.",
            "Your app shows me an error message all the time.",
            "I cannot open the mobile app since the update.",
            "Why does the app freeze every time I make a transfer?",
        ),
        "de": (
            "Die Banking-App stürzt beim Anmelden immer ab.",
            "Ihre App zeigt mir ständig eine Fehlermeldung.",
            "Seit dem Update kann ich die App nicht mehr öffnen.",
            "Warum hängt sich die App bei jeder Überweisung auf?",
        ),
        "es": (
            "La aplicación del banco se cierra cuando inicio sesión.",
            "Su aplicación me muestra un mensaje de error todo el rato.",
            "No puedo abrir la aplicación desde la actualización.",
            "¿Por qué se bloquea la aplicación cada vez que hago una transferencia?",
        ),
        "fr": (
            "L'application bancaire plante quand je me connecte.",
            "Votre application m'affiche sans arrêt un message d'erreur.",
            "Je n'arrive plus à ouvrir l'application depuis la mise à jour.",
            "Pourquoi l'application se bloque-t-elle à chaque virement ?",
        ),
        "it": (
            "L'app della banca si chiude quando faccio l'accesso.",
            "La vostra app mi mostra sempre un messaggio di errore.",
            "Non riesco ad aprire l'app dopo l'aggiornamento.",
            "Perché l'app si blocca ogni volta che faccio un bonifico?",
        ),
    },
    "direct_debit": {
        "en": (
            "I want to set up a direct debit for {bill}.",
            "Please cancel the direct debit to my gym.",
            "Can you show me all my direct debits?",
            "A company took money by direct debit without asking me.",
        ),
        "de": (
            "Ich möchte eine Lastschrift für {bill} einrichten.",
            "Bitte kündigen Sie die Lastschrift an mein Fitnessstudio.",
            "Können Sie mir alle meine Lastschriften zeigen?",
            "Eine Firma hat ohne meine Erlaubnis per Lastschrift abgebucht.",
        ),
        "es": (
            "Quiero domiciliar {bill}.",
            "Por favor, cancelen la domiciliación del gimnasio.",
            "¿Me pueden mostrar todas mis domiciliaciones?",
            "Una empresa me ha cobrado un recibo domiciliado sin permiso.",
        ),
        "fr": (
            "Je veux mettre en place un prélèvement pour {bill}.",
            "Annulez le prélèvement de ma salle de sport, s'il vous plaît.",
            "Pouvez-vous me montrer tous mes prélèvements ?",
            "Une entreprise a fait un prélèvement sans mon accord.",
        ),
        "it": (
            "Voglio attivare l'addebito diretto per {bill}.",
            "Per favore annullate l'addebito diretto della palestra.",
            "Mi potete mostrare tutti i miei addebiti diretti?",
            "Un'azienda ha fatto un addebito diretto senza il mio permesso.",
        ),
    },
    "business_loan": {
        "en": (
            "I need a loan of {amount} for my small business.",
            "What interest do you charge on business loans?",
            "Can my shop borrow money to buy new equipment?",
            "How do I apply for credit for my company?",
        ),
        "de": (
            "Ich brauche einen Kredit über {amount} für mein kleines Unternehmen.",
            "Welche Zinsen verlangen Sie für Geschäftskredite?",
            "Kann mein Laden Geld für neue Geräte leihen?",
            "Wie beantrage ich einen Kredit für meine Firma?",
        ),
        "es": (
            "Necesito un préstamo de {amount} para mi pequeña empresa.",
            "¿Qué interés cobran por los préstamos para empresas?",
            "¿Puede mi tienda pedir dinero prestado para comprar equipos nuevos?",
            "¿Cómo solicito un crédito para mi empresa?",
        ),
        "fr": (
            "J'ai besoin d'un prêt de {amount} pour ma petite entreprise.",
            "Quel taux d'intérêt appliquez-vous aux prêts professionnels ?",
            "Mon magasin peut-il emprunter pour acheter du nouveau matériel ?",
            "Comment demander un crédit pour ma société ?",
        ),
        "it": (
            "Ho bisogno di un prestito di {amount} per la mia piccola impresa.",
            "Che interessi applicate ai prestiti per le aziende?",
            "Il mio negozio può chiedere un prestito per comprare nuove attrezzature?",
            "Come faccio a chiedere un credito per la mia ditta?",
        ),
    },
}
INTENTS = tuple(sorted(TEMPLATES))


def _fill(template, slots):
    """Every sentence of `template`: one per combination of its slots' values."""
    names = _slot_names(template)
    return [
        _capitalised(template.format(**dict(zip(names, values))))
        for values in itertools.product(*(slots[name] for name in names))
    ]


def _capitalised(sentence):
    return sentence[0].upper() + sentence[1:]


def _slot_names(template):
    """`template`'s slot names in their order of first use."""
    return list(dict.fromkeys(name for _, name, _, _ in string.Formatter().parse(template) if name))


def test_template(intent):
    """The index of `intent`'s held-out template (rotates over the intents)."""
    return INTENTS.index(intent) % TEMPLATES_PER_INTENT


def intent_utterances(languages=LANGUAGES, intents=INTENTS, max_per_template=None):
    """The templated utterances, as dicts {"id", "text", "language", "label"
    (the intent), "template" (e.g. "balance/en/2"), "split"}, in a fixed order:
    all of them, or at most `max_per_template` of each template (spread evenly
    over its slot combinations)."""
    if max_per_template is not None and max_per_template < 1:
        raise ValueError(f"max_per_template must be >= 1 or None, got {max_per_template}")
    unknown = sorted(set(languages) - set(LANGUAGES)) + sorted(set(intents) - set(INTENTS))
    if unknown:
        raise ValueError(
            f"no intent templates for {unknown}; languages: {', '.join(LANGUAGES)}; "
            f"intents: {', '.join(INTENTS)}"
        )
    rows = []
    for intent in intents:
        for language in languages:
            for index, template in enumerate(TEMPLATES[intent][language]):
                sentences = _fill(template, SLOTS[language])
                keep = min(len(sentences), max_per_template or len(sentences))
                chosen = [sentences[i * len(sentences) // keep] for i in range(keep)]
                for number, text in enumerate(chosen):
                    rows.append(
                        {
                            "id": f"{language}-{intent}-{index}-{number}",
                            "text": text,
                            "language": language,
                            "label": intent,
                            "template": f"{intent}/{language}/{index}",
                            "split": "test" if index == test_template(intent) else "train",
                        }
                    )
    return rows


HELD_OUT = ("slots", "template")


def translation_pairs(language, split, held_out="slots"):
    """X-En sentence pairs of the templates: {"id", `language`: text, "en":
    text, "template", "split"}, one per slot combination of each template
    with `language`'s sentence and the same template's English one filled
    with the same slot value indices (templates and slot values are
    index-aligned across languages), in a fixed order.

    City names are not translated: the English side keeps the spoken
    language's city ("I have moved to Köln ..."), as a translator would.

    held_out: "slots": in each template with k >= 2 slot combinations,
    combination n (of `itertools.product` over its slots in their order of
    first use in the English template) is test when (n + p) % 3 == 0, p
    the template's position over all intents (~1/3 of them; no test
    sentence, source or English, is a training one in any language, its
    template is); "template": `test_template`'s template of each intent is
    test, so the test wording is unseen too.
    """
    if language == "en" or language not in LANGUAGES:
        raise ValueError(f"language must be one of {[x for x in LANGUAGES if x != 'en']}")
    if held_out not in HELD_OUT or split not in ("train", "test"):
        raise ValueError(f"held_out in {HELD_OUT}, split train/test; got {held_out!r}, {split!r}")
    pairs = []
    for position, (intent, index) in enumerate(
        itertools.product(INTENTS, range(TEMPLATES_PER_INTENT))
    ):
        source, english = TEMPLATES[intent][language][index], TEMPLATES[intent]["en"][index]
        names = _slot_names(english)  # one numbering of the combinations in every language
        if sorted(names) != sorted(_slot_names(source)):
            raise ValueError(f"{intent}/{index}: {language} and en templates differ in slots")
        combinations = list(itertools.product(*(range(len(SLOTS["en"][n])) for n in names)))
        for number, indices in enumerate(combinations):
            if held_out == "slots":
                test = len(combinations) >= 2 and (number + position) % 3 == 0
            else:
                test = index == test_template(intent)
            if test != (split == "test"):
                continue
            values = {n: SLOTS[language][n][i] for n, i in zip(names, indices)}
            target = {n: SLOTS["en"][n][i] for n, i in zip(names, indices)}
            target.update({n: values[n] for n in names if n == "city"})
            pairs.append(
                {
                    "id": f"{language}-{intent}-{index}-{number}",
                    language: _capitalised(source.format(**values)),
                    "en": _capitalised(english.format(**target)),
                    "template": f"{intent}/{index}",
                    "split": split,
                }
            )
    return pairs
