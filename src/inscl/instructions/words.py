"""Content words of an instruction in any script, for the offline keyphrase tagger.

Text is NFC-normalised and lower-cased. In scripts written with spaces (Latin, Cyrillic, Greek,
Hangul, ...) a word is a run of letters with inner apostrophes or hyphens; an elided French article
or pronoun ("l'", "d'", "qu'") is cut off. Chinese and Japanese are written without spaces, and
no dictionary is used, so their words come from the script itself:
- hiragana holds Japanese particles and endings, so it separates words;
- a katakana run is one word (loanwords: テキスト);
- a run of Han characters is cut at stop words (的, 以下, 或者, ...); a piece longer than
  MAX_HAN_WORD characters is cut at a preposition (对, 在, 从, ...) that leaves two characters
  or more on each side, and what is still too long is covered by its overlapping character
  bigrams, the usual dictionary-free fallback for Chinese text.
Stop words are English function words (scikit-learn's list) and words every instruction uses
("given", "following", 以下, 输出); a text with more German or French stop words than English ones
also gets that language's list, so an English "plus" or "hat" stays a content word.
"""

from __future__ import annotations

import functools
import re
import unicodedata

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
HIRAGANA = "\u3041-\u309f"
KATAKANA = "\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
CJK = HAN + HIRAGANA + KATAKANA
MAX_HAN_WORD = 4

# punctuation, line breaks and quotes (an apostrophe not inside a word) end a run of words
_BREAKS = re.compile(r"[^\w'’\s-]|\n|(?<!\w)['’]|['’](?!\w)")
_LETTER = rf"(?:(?![{CJK}])[^\W\d_])"
_TOKENS = re.compile(rf"(?P<cjk>[{CJK}]+)|(?P<word>{_LETTER}(?:(?:{_LETTER}|['’-])*{_LETTER})?)")
_ELISION = re.compile(r"^(?:[a-z]|qu|jusqu|lorsqu|puisqu)['’](?=\w)")
_SCRIPTS = re.compile(rf"(?P<han>[{HAN}]+)|(?P<kana>[{KATAKANA}]+)|[{HIRAGANA}]+")

INSTRUCTION_WORDS = {
    "given", "following", "task", "definition", "input", "output", "example", "examples", "provided",
    "based", "need", "using", "use", "just", "like", "e", "g", "i", "ie", "eg", "etc",
}  # fmt: skip
GERMAN = frozenset({
    "der", "die", "das", "den", "dem", "des", "ein", "eine", "einer", "eines", "einem", "einen", "und",
    "oder", "aber", "nicht", "kein", "keine", "ist", "sind", "war", "waren", "wird", "werden", "wurde",
    "sein", "haben", "hat", "hatte", "zu", "zum", "zur", "mit", "von", "vom", "im", "in", "ins", "an",
    "am", "auf", "aus", "bei", "nach", "für", "über", "unter", "vor", "durch", "gegen", "ohne", "um",
    "es", "er", "sie", "ihr", "ihre", "ihren", "ihrem", "ihn", "ihm", "wir", "ich", "du", "man", "sich",
    "dass", "daß", "wenn", "als", "wie", "was", "wer", "wo", "welche", "welcher", "welches", "dieser",
    "diese", "dieses", "diesen", "jeder", "jede", "jedes", "alle", "nur", "auch", "noch", "so", "dann",
    "kann", "können", "soll", "sollen", "sollte", "muss", "müssen", "bitte", "folgenden", "folgende",
    "folgendes", "gegeben", "gegebenen", "gegebene", "aufgabe", "eingabe", "ausgabe", "beispiel",
})  # fmt: skip
FRENCH = frozenset({
    "le", "la", "les", "un", "une", "des", "du", "de", "et", "ou", "mais", "ne", "pas", "est", "sont",
    "être", "avoir", "a", "au", "aux", "en", "dans", "sur", "sous", "par", "pour", "avec", "sans",
    "vers", "chez", "ce", "cet", "cette", "ces", "il", "elle", "ils", "elles", "on", "nous", "vous",
    "je", "tu", "se", "sa", "ses", "leur", "leurs", "qui", "que", "quoi", "dont", "où", "si", "comme",
    "plus", "très", "tout", "tous", "toute", "toutes", "chaque", "votre", "vos", "notre", "nos",
    "suivant", "suivante", "suivants", "suivantes", "donné", "donnée", "données", "tâche", "entrée",
    "sortie", "exemple", "veuillez",
})  # fmt: skip
CHINESE = [  # longest first: they are cut out of a Han run before single characters
    "以下", "下面", "如下", "或者", "以及", "并且", "而且", "如果", "因为", "所以", "但是", "一个", "这个",
    "那个", "每个", "给定", "根据", "其中", "之间", "我们", "你们", "他们", "它们", "可以", "需要", "应该",
    "什么", "哪个", "如何", "怎么", "是否", "已经", "还是", "只是", "就是", "对于", "关于", "通过", "输出",
    "输入", "任务", "示例", "例子", "请", "的", "了", "着", "吗", "呢", "吧", "啊", "或", "和", "与", "及",
    "并", "之", "其", "该", "这", "那", "是", "也", "都", "就", "而",
]  # fmt: skip
PREPOSITIONS = "对在从向把被给为将以于由按"


@functools.lru_cache(maxsize=1)
def english_stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # imported lazily: scikit-learn is slow to load

    return frozenset(ENGLISH_STOP_WORDS) | INSTRUCTION_WORDS


def stop_words(words: list[str]) -> frozenset[str]:
    """English stop words, plus the German or French list when `words` hold more of its words."""
    english = english_stop_words()
    other = max((GERMAN, FRENCH), key=lambda language: sum(word in language for word in words))
    if sum(word in other for word in words) > sum(word in english for word in words):
        return english | other
    return english


_CHINESE_STOPS = re.compile("|".join(CHINESE))


def _han_words(run: str) -> list[str]:
    words = []
    for piece in _CHINESE_STOPS.split(run):
        pieces = [piece]
        while pieces:
            piece = pieces.pop(0)
            if len(piece) <= MAX_HAN_WORD:
                words.append(piece)
                continue
            cut = next((i for i in range(2, len(piece) - 2) if piece[i] in PREPOSITIONS), None)
            if cut is not None:
                pieces[:0] = [piece[:cut], piece[cut + 1 :]]
            else:
                words += [piece[i : i + 2] for i in range(len(piece) - 1)]
    return words


def _cjk_words(run: str) -> list[str]:
    words = []
    for match in _SCRIPTS.finditer(run):
        if match.lastgroup == "han":
            words += _han_words(match.group())
        elif match.lastgroup == "kana":
            words.append(match.group())
    return words


def content_runs(text: str) -> list[list[str]]:
    """Runs of adjacent content words (2 characters or more) of `text`, in order. A stop word,
    punctuation or a line break ends a run; a Chinese or Japanese word is a run of its own, since
    joining it to its neighbours would not give a phrase of the text."""
    chunks = [
        [(match.lastgroup, _ELISION.sub("", match.group())) for match in _TOKENS.finditer(chunk)]
        for chunk in _BREAKS.split(unicodedata.normalize("NFC", text).lower())
    ]
    stop = stop_words([token for chunk in chunks for kind, token in chunk if kind == "word"])
    runs: list[list[str]] = []
    for chunk in chunks:
        run: list[str] = []
        for kind, word in chunk:
            if kind == "cjk":
                runs.append(run)
                runs += [[cjk] for cjk in _cjk_words(word) if len(cjk) > 1]
                run = []
                continue
            if word not in stop and len(word) > 1:
                run.append(word)
            else:
                runs.append(run)
                run = []
        runs.append(run)
    return [run for run in runs if run]
