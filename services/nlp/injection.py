"""A prompt-injection score (0 to 1): a guardrail signal, not a verdict.

Two parts, and the score is the higher of them. `InjectionDetector` is a logistic regression over character
and word n-grams and, where it is installed, the USE multilingual sentence embedding (weight 2, as in the
intent model: it carries attacks over to paraphrases and languages the n-grams never saw), trained at
start-up (a few seconds) on `supportbot/data/injection/examples.csv` (200 attacks, 200 look-alike customer
messages) and the default intents as ordinary traffic; its probability is
shifted so that 0.5 means 0.9 before the shift, since balanced class weights assume far more attacks than
real traffic holds. `signal_score` matches hand-written phrasings of the techniques. Measured in
docs/benchmarks.md (`bench/nlp_injection.py`).

Signals are phrasings of the known techniques, in English, Japanese and the main European languages:
overriding the instructions, extracting them, role-play personas, fake chat-template or role markers,
claimed authority, orders about what to answer, obfuscation, instructions planted in pasted content, and
what attacks are after (internal codes, free items). A technique counts once, with the weight of its
strongest matched phrasing; techniques are independent evidence, combined as 1 - Π(1 - w). The text is
matched as written, de-obfuscated (NFKC, leetspeak digits, letters spaced or hyphenated apart) and reversed,
so "1gn0re", "i g n o r e" and "ign-ore" count too.
"""

from __future__ import annotations

import csv
import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from services.nlp import tokens
from services.nlp.classifier import EMBEDDING_WEIGHT, normalize, read_examples
from services.nlp.encoders import Encoder
from services.nlp.features import tfidf_row
from supportbot.resources import DATA_DIR, DEFAULT_INTENTS_CSV

INJECTION_EXAMPLES_CSV = DATA_DIR / "injection" / "examples.csv"
# The regression's probability that reads as 0.5: chosen by 5-fold cross-validation of the training data,
# where 0.9 caught 65% of the held-out attacks and flagged 4% of the look-alike messages (0.7: 84% and 10%).
PROBABILITY_AT_HALF = 0.9
REGULARISATION_C = 30.0
# A signal, not a verdict: never 1, so that a guardrail threshold of 1 means "off" (rounded to four places,
# confident attacks would otherwise read exactly 1).
MAX_SCORE = 0.9999

_ANY = r".{0,60}?"


def _signal(pattern: str, weight: float, *, case: bool = False) -> tuple[re.Pattern[str], float]:
    return re.compile(pattern, re.DOTALL if case else re.IGNORECASE | re.DOTALL), weight


_INSTRUCTIONS = (r"(instructions?|prompts?|rules|directions|guidelines|guardrails|polic(y|ies)|constraints|"
                 r"programming|directives|context|setup|orders)")
_TECHNIQUES: dict[str, tuple[tuple[re.Pattern[str], float], ...]] = {
    "override": (
        _signal(r"\b(ignore|disregard|forget|override|bypass|skip|drop|abandon|erase|discard|set aside)\b" + _ANY
                + r"\b(previous|prior|above|earlier|preceding|all|any|your|the|these|those|original|initial|system)\b"
                + _ANY + r"\b" + _INSTRUCTIONS + r"\b", 0.8),
        _signal(r"\bforget (everything|all) (you (were|have been) told|above|before)|\bignore (the|everything) above\b"
                r"|\bstop following your\b|\b(previous|prior|original) (directions|instructions|rules) are (void|"
                r"cancelled|canceled|invalid)|\bignore whatever\b.{0,40}\btold you\b|\bset (them|those|your rules) "
                r"aside\b", 0.8),
        _signal(r"\b(ignorier\w*|vergiss|vergessen|missachte\w*|überschreib\w*|umgeh\w*|verwirf|verwerfe)\b" + _ANY
                + r"(anweisung|instruktion|regeln|vorgaben|prompt|richtlinie|befehl)", 0.8),
        _signal(r"\b(ignore[rsz]?|oublie[rsz]?|ne tiens pas compte|ne tenez pas compte|contourne[rz]?)\b" + _ANY
                + r"(instruction|consigne|règle|regle|directive|prompt)", 0.8),
        _signal(r"\b(ignora\w*|olvida\w*|omite|haz caso omiso|descarta\w*|dimentica\w*|scarta\w*|salta)\b" + _ANY
                + r"(instrucci|regla|indicaci|directriz|directrices|istruzion|regole|direttive|norme|normas|prompt)",
                0.8),
        _signal(r"\b(negeer|vergeet|esqueça|esqueca)\b" + _ANY
                + r"(instructies|opdrachten|regels|richtlijnen|instruções|instrucoes|regras|diretrizes|prompt)", 0.8),
        _signal(r"\b(vergiss|oublie|olvida|dimentica|vergeet|esquece)\w* (alles|tout|todo|tutto|tudo)\b.{0,40}"
                r"(gesagt|dit|dijeron|detto|gezegd|disseram)", 0.8),
        _signal(r"(指示|命令|プロンプト|指令)を(すべて|全部|全て)?(無視|忘れ|破棄|リセット)"
                r"|(以前|前|上記|これまで|最初|元)の(指示|命令|プロンプト|ルール|設定|指令)(は|を)(すべて|全部|全て)?"
                r"(無視|忘れ|取り消|破棄)|(無視|忘れ)(して|しろ|せよ|てください).{0,15}(指示|命令|プロンプト)"
                r"|しじ.{0,6}むし|むし.{0,6}しじ", 0.8),
    ),
    "extraction": (
        _signal(r"\b(system|hidden|initial|original|secret|pre-?)\s*prompt\b|\b(developer|hidden|secret|original"
                r"|initial) (message|instructions)\b|\binstructions you (were|have been) given\b"
                r"|\bcontext window\b|\benvironment variables\b|\bwhat were you told\b"
                r"|\b(everything|all|what was) (written )?(before|above) (my first|this) message\b", 0.5),
        _signal(r"\b(reveal|show|print|repeat|output|leak|display|dump|list|share|paste|quote|summari[sz]e|tell me|"
                r"give me|what (is|are|were))\b" + _ANY + r"\b((your|initial|hidden|original|full set of)\s+(prompt|"
                r"instructions?|configuration|api.?key|secrets?|credentials|guidelines)|the (system )?prompt)\b", 0.5),
        _signal(r"\b(text|everything|words|all|what is written|what was written)\s+(above|before this|preceding)\b"
                r"|\bstarting with\s+['\"]?you are\b", 0.5),
        _signal(r"(system-?prompt|systemprompt|systeemprompt|systemanweisung|prompt (système|systeme|del sistema|di "
                r"sistema)|deine anweisungen|tes (instructions|consignes)|vos (instructions|consignes)|tus "
                r"instrucciones|le tue istruzioni|je instructies)", 0.5),
        _signal(r"\b(secret|geheim\w*|secrètes?|secretas?|segret\w*|riservat\w*|internal|interne[ns]?|interni)\b.{0,30}"
                r"(instructions|anweisungen|instrucciones|istruzioni|regole|rules|regels|documents|regeln)"
                r"|\b(instructions|instrucciones|istruzioni|regole)\s+(secrètes|secretas|segrete|interne|riservate)\b"
                r"|\b(texte|texto|text|testo|tekst)\b.{0,25}(au-dessus|encima|oberhalb|sopra|hierboven)", 0.5),
        _signal(r"システムプロンプト|(指示|プロンプト|設定|命令)(の内容|内容)?を(教えて|見せて|表示|出力|開示)"
                r"|(与えられた|受け取っている|最初の)(指示|ルール|設定)|(内部|秘密)の?(ルール|設定|指示)", 0.5),
        _signal(r"\b(word for word|verbatim|mot pour mot|palabra por palabra|parola per parola|woord voor woord|"
                r"wortwörtlich|quote it exactly)\b|一字一句", 0.3),
    ),
    "roleplay": (
        _signal(r"\byou are (now|no longer)\b|\bfrom now on,? you\b|\bpretend (to be|you are|you're|that you)\b"
                r"|\bact (as|like) (if you|you are|an? (unrestricted|unfiltered|evil)|my|the store owner)\b"
                r"|\brole-?play\b|\bstay in character\b|\bimagine you('re| are) an?\b", 0.4),
        _signal(r"\b(jailbreak\w*|dan mode|developer mode|god mode|do anything now|unfiltered|uncensored|"
                r"unrestricted)\b|\bunlocked (version|mode|ai|assistant)\b|\b\w+gpt unlocked\b"
                r"|\b(without|no|ignores?) (any )?(restrictions|filters|limits|rules|guidelines|content "
                r"polic(y|ies)|shop policies)\b", 0.6),
        _signal(r"\bDAN\b(?!-?\d)", 0.6, case=True),  # the jailbreak persona; not Dan, not a DAN-200 model
        _signal(r"\b(du bist (jetzt|ab sofort|nun)|ab (jetzt|sofort) bist du|tu so,? als|spiel (meine|den|die)"
                r"|tu es (maintenant|désormais)|à partir de maintenant,? tu|fais (comme si|semblant)|joue le rôle"
                r"|ahora eres|a partir de ahora,? (eres|tú)|finge|actúa como|ora sei|d'ora in poi|fingi|fai finta"
                r"|je bent nu|vanaf nu ben je|doe alsof)\b", 0.4),
        _signal(r"\b(ohne regeln|sans règles|sin reglas|senza regole|zonder regels)\b", 0.5),
        _signal(r"(今から|これから|以後|以降).{0,10}(あなた|君|お前|貴方)は|なりきって|として振る舞|ロールプレイ|ふりをして"
                r"|制限(なし|を解除|を外)|脱獄|ルールを気にしない", 0.4),
    ),
    "delimiter": (
        _signal(r"<\|?\s*/?\s*(im_start|im_end|system|assistant|endoftext|user)\s*\|?>|</?s>|\[/?(inst|sys)\]|<<sys>>"
                r"|(^|\n)\s*#{2,}\s*(system|sistema|instruction|new instructions)|\bnew (system )?(message|prompt|"
                r"instructions?)\s*:|\b(end of|ignore) (the )?(user )?(input|context)\b|[\"']role[\"']\s*:\s*[\"']"
                r"(system|developer)|<\s*(admin|system|developer)_?\w*\s*>", 0.7),
        _signal(r"(^|\n)\s*(user|human)\s*:.*\n\s*(assistant|ai)\s*:", 0.6),
        _signal(r"(^|\n)\s*(system|assistant|developer)\s*:", 0.3),  # also "System: Windows 11" in a bug report
        _signal(r"\b(neue systemnachricht|nouveau message système|nuevo mensaje del sistema|nuovo messaggio di "
                r"sistema|nieuw systeembericht|ende der (nutzer|benutzer)eingabe|fin de la entrada|einde "
                r"gebruikersinvoer|fin de l'entrée)\b|新しいシステムメッセージ|入力終了", 0.7),
    ),
    "authority": (
        _signal(r"\b(admin(istrator)?|developer|root|sudo|maintenance|debug|god)\s*-?\s*(override|mode|command|"
                r"privileges?)\b|\boverride (code|mode|command|protocol)\b|\bi('m| am) your (developer|creator|"
                r"admin|administrator|owner|programmer)\b|\bi('m| am) the (developer|creator|owner|admin)\w* of (this|"
                r"the|your) (bot|chatbot|assistant|shop|store)\b|\bas your (developer|creator|admin|administrator)\b",
                0.5),
        _signal(r"\b(restrictions|rules|polic(y|ies)|filters)\b.{0,30}\b(are|have been|has been|is)\s+(suspended|"
                r"lifted|disabled|void|updated|removed)\b|\bturn off (all )?(restrictions|filters|rules)\b"
                r"|\bauthori[sz]ation code\b|\b(message|notice) from (openai|anthropic|head office|"
                r"the developers?)\b", 0.5),
        _signal(r"\b(approved|authori[sz]ed|validated)\b.{0,80}\b(now|immediately|right away)\b|\bwithout "
                r"(asking|checking|verification|verifying)\b", 0.3),
        _signal(r"(管理者|開発者)(権限|モード|として)|(Administrator|Entwickler)modus|mode (administrateur|développeur)"
                r"|modo (administrador|desarrollador|sviluppatore)|admin-override|dérogation administrateur"
                r"|anulación de administrador|als (dein|je) (entwickler|ontwikkelaar)|en tant que ton développeur"
                r"|como tu desarrollador|sono lo sviluppatore|(autorisiere ich dich|je t'autorise|te autorizo|ti "
                r"autorizzo|geef ik je toestemming)|承認済み.{0,30}(今すぐ|確認なし)|監査のため", 0.5),
        _signal(r"\bkeur\b.{0,30}\bgoed\b|(beschränkungen|restrictions|restricciones|restrizioni|beperkingen)"
                r".{0,30}(deaktiviert|levées|desactivadas|disattivate|uitgeschakeld)"
                r"|(genehmigt|validé|aprobó|approvato|goedgekeurd).{0,60}(sofort|maintenant|ahora|subito|direct)", 0.5),
    ),
    "policy": (
        _signal(r"\b(respond|reply|answer|say|output|write)\s+only\b|\band nothing else\b|\b(from now on|going "
                r"forward|from here on|henceforth|you must)\b.{0,40}\b(approve|grant|agree|confirm|treat every|"
                r"apply an?\b)|\balways (tell|say to|answer) customers\b|\bagree with everything\b"
                r"|\b(your )?new (rule|policy)( for this chat)?\s*:|\blegally binding\b|\byou must say\b", 0.5),
        _signal(r"\b(approve|grant|accept)\s+(all|every|any)\s+(refunds?|requests?|returns?|claims?)\b", 0.5),
        _signal(r"\b(du musst|tu dois|tienes que|devi|je moet) (sagen|dire|decir|zeggen)\b|\bnur noch mit\b"
                r"|\b(réponds|responde|rispondi|antwoord) (uniquement|solo|solamente|alleen)\b|\b(ab sofort|ab jetzt|"
                r"à partir de maintenant|désormais|a partir de ahora|d'ora in poi|vanaf nu)\b.{0,40}\b(genehmig\w*|"
                r"approuve\w*|aprueba\w*|approva\w*|keur\w*)", 0.5),
        _signal(r"と言ってください|と確約|とだけ答え|(これから先|今後は|これからは).{0,30}(承認|答え|従って)"
                r"|新しいルール[:：]", 0.5),
    ),
    "obfuscation": (
        _signal(r"\b(decode|base64|rot13|reverse this)\b.{0,60}\b(follow|execute|do|obey|run)\b|\b(translate|decode)"
                r"\b.{0,60}\b(and|then)\s+(follow|execute|do what it says|obey|run)\b|(デコード|復号).{0,20}従", 0.5),
        _signal(r"[A-Za-z0-9+/]{24,}={0,2}", 0.2),
    ),
    "indirect": (
        _signal(r"\b(note|message|p\.?s\.?) (to|for) (any|the) (ai|assistant|chatbot|bot|llm)\b|\b(assistant|chatbot|"
                r"ai|bot)\s*[,:]\s*(when|if|si) (you|tu|a user)\b|\bwhen you read this\b"
                r"|\b(para el asistente|pour l'assistant|an den assistenten|per l'assistente|voor de assistent)"
                r"|(チャットボット|AI|アシスタント).{0,10}(は|へ).{0,20}(読んだら|読んだ場合)", 0.6),
        _signal(r"\b(ai|assistant|chatbot)\b.{0,40}\b(treat the user as|issue store credit|generate a .{0,20}"
                r"(voucher|code))", 0.4),
    ),
    "payload": (  # what attacks are after; weak alone, it strengthens a persona or an authority claim
        _signal(r"\b(internal|staff|employee|secret|hidden)\s+(discount|promo|gift ?card|voucher)\s+codes?\b"
                r"|\bgift card (activation )?codes\b|\bcodes? de cartes? cadeaux?\b|\bcódigos de tarjetas? regalo\b"
                r"|\bgutscheincodes\b|ギフトカードのコード|\bapi.?(keys?|schlüssel)\b|\b(clés|claves|chiavi|sleutels) api\b"
                r"|apiキー|\badmin password\b|\bfor free\b.{0,20}\b(items?|products?|everything)\b"
                r"|\b(internal|confidential) (documents|data|information)\b|(内部|社内)(情報|コード)"
                r"|(interne[ns]?|internes|internos|interni|interne) (rabattcodes|codes promo|códigos|codici|"
                r"kortingscodes)", 0.3),
    ),
}
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SPACED = re.compile(r"\b(?:\w[ ._\-*]){3,}\w\b")
_HYPHENATED = re.compile(r"\b[a-z]{2,}(?:-[a-z]{2,})+\b", re.IGNORECASE)
_SPACED_CJK = re.compile(r"(?:[\u3040-\u30ff\u4e00-\u9fff] ){2,}[\u3040-\u30ff\u4e00-\u9fff]")


def signal_score(text: str) -> float:
    """Each technique's strongest matched signal, combined as independent evidence: 1 - Π(1 - w)."""
    normal = unicodedata.normalize("NFKC", text)
    variants = {normal, _deobfuscate(normal), normal[::-1]}
    remaining = 1.0
    for signals in _TECHNIQUES.values():
        weight = max((w for pattern, w in signals if any(pattern.search(v) for v in variants)), default=0.0)
        remaining *= 1.0 - weight
    return round(1.0 - remaining, 4)


def _deobfuscate(text: str) -> str:
    """Letters spaced or dotted apart joined, words hyphenated apart joined, leetspeak digits read as letters."""
    joined = _SPACED.sub(lambda match: re.sub(r"[ ._\-*]", "", match.group()), text)
    joined = _HYPHENATED.sub(lambda match: match.group().replace("-", ""), joined)
    return _SPACED_CJK.sub(lambda match: match.group().replace(" ", ""), joined).translate(_LEET)


@dataclass
class InjectionDetector:
    """Character 2–5-grams, (Japanese-aware) word 1–2-grams and optionally a sentence embedding → logistic
    regression, plus `signal_score`."""

    chars: TfidfVectorizer
    words: TfidfVectorizer
    char_weights: np.ndarray
    word_weights: np.ndarray
    intercept: float
    encoder: Encoder | None = None
    embedding_weights: np.ndarray | None = None  # already scaled by EMBEDDING_WEIGHT

    @classmethod
    def train(cls, texts: list[str], is_injection: list[bool], encoder: Encoder | None = None) -> InjectionDetector:
        chars = TfidfVectorizer(preprocessor=normalize, analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                min_df=2, dtype=np.float32)
        words = TfidfVectorizer(preprocessor=normalize, tokenizer=tokens.words, token_pattern=None,
                                ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
        blocks = [chars.fit_transform(texts), words.fit_transform(texts)]
        if encoder is not None:
            blocks.append(sp.csr_matrix(encoder.encode(texts) * EMBEDDING_WEIGHT))
        model = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=3000)
        model.fit(sp.hstack(blocks, format="csr"), np.asarray(is_injection))
        weights = model.coef_[0].astype(np.float32)
        n_chars, n_words = len(chars.vocabulary_), len(words.vocabulary_)
        embedding_weights = None if encoder is None else weights[n_chars + n_words:] * EMBEDDING_WEIGHT
        return cls(chars, words, weights[:n_chars], weights[n_chars:n_chars + n_words], float(model.intercept_[0]),
                   encoder, embedding_weights)

    @classmethod
    def from_shipped_data(cls, examples: Path = INJECTION_EXAMPLES_CSV, ordinary: Path = DEFAULT_INTENTS_CSV,
                          encoder: Encoder | None = None) -> InjectionDetector:
        """Trained on the shipped attack and look-alike examples, with the default intents as ordinary traffic."""
        with examples.open(newline="", encoding="utf-8") as handle:
            rows = [(row["text"], row["label"] == "injection") for row in csv.DictReader(handle)]
        traffic, _ = read_examples(ordinary)
        return cls.train([t for t, _ in rows] + traffic, [flag for _, flag in rows] + [False] * len(traffic),
                         encoder)

    @classmethod
    def shipped(cls, encoder: Encoder | None = None) -> InjectionDetector:
        """`from_shipped_data`, trained once per process and encoder (it only reads once trained)."""
        key = None if encoder is None else encoder.name
        with _shipped_lock:
            if key not in _shipped:
                _shipped[key] = cls.from_shipped_data(encoder=encoder)
            return _shipped[key]

    def probability(self, text: str, embedding: np.ndarray | None = None) -> float:
        """The regression's own P(injection), before the shift. `embedding`: the text's, by `self.encoder`,
        when the caller has it already."""
        z = self.intercept
        for vectorizer, weights in ((self.chars, self.char_weights), (self.words, self.word_weights)):
            columns, values = tfidf_row(vectorizer, text)
            z += float(values @ weights[columns])
        if self.encoder is not None and self.embedding_weights is not None:
            vector = self.encoder.encode_one(text) if embedding is None else embedding
            z += float(vector @ self.embedding_weights)
        return 1.0 / (1.0 + math.exp(-z))

    def regression_score(self, text: str, embedding: np.ndarray | None = None) -> float:
        """The probability shifted so that `PROBABILITY_AT_HALF` reads as 0.5."""
        z = _logit(self.probability(text, embedding)) - _logit(PROBABILITY_AT_HALF)
        return 1.0 / (1.0 + math.exp(-z))

    def score(self, text: str, embedding: np.ndarray | None = None) -> float:
        """The higher of `regression_score` and `signal_score`, from 0 to `MAX_SCORE`."""
        return min(round(max(self.regression_score(text, embedding), signal_score(text)), 4), MAX_SCORE)


_shipped: dict[str | None, InjectionDetector] = {}
_shipped_lock = threading.Lock()


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))
