"""Per-task metrics of the TRACE protocol (and InsCL's ROUGE-L), every score on a 0-100 scale.

Each task has one primary metric (the score matrix uses it) and optional secondary metrics reported
beside it, as TRACE reports BLEU-1/4 and ROUGE-L next to its headline numbers (evaluations/*.py).

- ``exact_match``: TRACE's accuracy. TRACE compares the raw decoded generation with the answer
  and counts an empty generation as wrong. We compare after stripping surrounding whitespace of
  both sides (a decoding artefact, e.g. SentencePiece's leading space, must not turn a correct
  answer wrong); ``normalize=True`` also lowercases and collapses inner whitespace runs.
  With several references, matching any one is correct.
- ``rouge_l``: ROUGE-L F-measure of ``rouge_score`` with the Porter stemmer, as SuperNI (and so
  InsCL) computes it; the maximum over references.
- ``edit_similarity``: TRACE's Py150 metric. Undo the literal placeholders (``<NUM_LIT>`` -> 0,
  ``<STR_LIT>``/``<CHAR_LIT>`` -> empty, ``<KIND_LIT:x>`` -> x), then a fuzzy ratio (rapidfuzz
  Indel ratio, 0-100, unrounded); the maximum over references. An empty generation scores 0.
- ``first_char_accuracy``: TRACE's ScienceQA accuracy (eval_ScienceQA.py:6-12): the first character
  of the generation (after surrounding whitespace, as for exact match) equals the reference's first
  character, the answer letter of "A\\nBecause ...".
- ``bleu_1``, ``bleu_4``: TRACE's BLEU (metrics.py:15-47): nltk ``sentence_bleu`` without smoothing
  on tokens split at whitespace and ".", uniform weights over 1 or 4 n-gram orders; a zero n-gram
  precision gives 0 (nltk returns 0, or below 1e-70 through its float-minimum fallback). With several
  references the n-gram counts are clipped by their maximum over references and the closest reference
  length sets the brevity penalty, as in nltk.
- ``reasoning_bleu_1``, ``reasoning_bleu_4``, ``reasoning_rouge_l``: the same on the reasoning,
  TRACE's ScienceQA split (eval_ScienceQA.py:6-12): the characters from index 2 on of both sides.
- ``sari``: the tensor2tensor-derived SARI of the HF ``evaluate`` library (n-grams 1-4; keep F1,
  deletion precision, addition F1; 0/0 = 1; lowercase + sacrebleu 13a tokenization), with the
  prompt as the source sentence.

Where TRACE differs: it compares raw strings (we strip surrounding whitespace first); it takes
ROUGE-L from the ``rouge`` package (we use ``rouge_score`` with the stemmer, InsCL's choice, for the
primary and secondary ROUGE-L alike); and it skips empty generations in the numerator while counting
them in the denominator, which equals our 0 for an empty generation.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from functools import lru_cache
from typing import Callable, Sequence

import pandas as pd

from inscl.core import artifacts
from inscl.core.io import InputError

log = logging.getLogger(__name__)

METRIC_NAMES = (
    "exact_match",
    "first_char_accuracy",
    "rouge_l",
    "edit_similarity",
    "sari",
    "bleu_1",
    "bleu_4",
    "reasoning_bleu_1",
    "reasoning_bleu_4",
    "reasoning_rouge_l",
)
_WHITESPACE = re.compile(r"\s+")
_BLEU_SPLIT = re.compile(r"\s|\.")
_TYPED_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def _as_references(references) -> list[str]:
    if isinstance(references, str):
        return [references]
    return [str(r) for r in references]


def exact_match(prediction: str, references, normalize: bool = False) -> float:
    """100 if the generation equals any reference (see module docstring), else 0."""

    def canonical(text: str) -> str:
        text = text.strip()
        return _WHITESPACE.sub(" ", text.lower()) if normalize else text

    guess = canonical(prediction)
    if not guess:
        return 0.0
    return 100.0 if any(guess == canonical(ref) for ref in _as_references(references)) else 0.0


def first_char_accuracy(prediction: str, references) -> float:
    """100 if the generation's first character equals a reference's first character, else 0."""
    guess = prediction.strip()
    if not guess:
        return 0.0
    return 100.0 if any(ref.strip()[:1] == guess[0] for ref in _as_references(references)) else 0.0


def reasoning(text: str) -> str:
    """TRACE's ScienceQA reasoning: the text after the answer letter and its separator."""
    return text.strip()[2:]


def bleu_tokens(text: str) -> list[str]:
    return [token for token in _BLEU_SPLIT.split(text) if token]


def bleu(prediction: str, references, order: int) -> float:
    """Sentence BLEU x 100 with uniform weights over n-gram orders 1..`order`, no smoothing."""
    guess = bleu_tokens(prediction)
    refs = [bleu_tokens(ref) for ref in _as_references(references)]
    if not guess or not any(refs):
        return 0.0
    log_precision = 0.0
    for n in range(1, order + 1):
        counts = Counter(_ngrams(guess, n))
        most = Counter()
        for ref in refs:
            most |= Counter(_ngrams(ref, n))
        matched = sum(min(count, most[gram]) for gram, count in counts.items())
        if matched == 0:
            return 0.0
        log_precision += math.log(matched / max(1, sum(counts.values()))) / order
    closest = min((len(ref) for ref in refs), key=lambda length: (abs(length - len(guess)), length))
    brevity = 1.0 if len(guess) > closest else math.exp(1 - closest / len(guess))
    return 100.0 * brevity * math.exp(log_precision)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references) -> float:
    """ROUGE-L F-measure x 100, the best over references."""
    if not prediction.strip():
        return 0.0
    scorer = _rouge_scorer()
    return 100.0 * max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in _as_references(references))


def undo_code_literals(code: str) -> str:
    """Replace Py150's literal placeholders by values, as TRACE's Py150 evaluation does."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    return _TYPED_LITERAL.sub(lambda m: m.group(2), code)


def edit_similarity(prediction: str, references) -> float:
    """Fuzzy ratio (0-100) between the code with literals restored, the best over references."""
    from rapidfuzz import fuzz

    if not prediction:
        return 0.0
    guess = undo_code_literals(prediction)
    return max(fuzz.ratio(guess, undo_code_literals(ref)) for ref in _as_references(references))


# --- SARI -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _tokenizer_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def sari_normalize(sentence: str) -> str:
    """Lowercase and tokenize with sacrebleu's 13a tokenizer (tokens joined by single spaces)."""
    return _tokenizer_13a()(sentence.lower())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision > 0 or recall > 0 else 0.0


def _sari_ngram_scores(source: list, candidate: list, references: list[list]) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n-gram order."""
    n_refs = len(references)
    ref_counts = Counter(g for ref in references for g in ref)
    src_counts = Counter({g: c * n_refs for g, c in Counter(source).items()})
    cand_counts = Counter({g: c * n_refs for g, c in Counter(candidate).items()})

    kept = src_counts & cand_counts
    kept_good = kept & ref_counts
    kept_possible = src_counts & ref_counts
    keep_precision = sum(kept_good[g] / kept[g] for g in kept_good) / len(kept) if kept else 1.0
    keep_recall = sum(kept_good.values()) / sum(kept_possible.values()) if kept_possible else 1.0

    deleted = src_counts - cand_counts
    deleted_good = deleted - ref_counts
    del_precision = sum(deleted_good[g] / deleted[g] for g in deleted_good) / len(deleted) if deleted else 1.0

    added = set(cand_counts) - set(src_counts)
    added_good = added & set(ref_counts)
    added_possible = set(ref_counts) - set(src_counts)
    add_precision = len(added_good) / len(added) if added else 1.0
    add_recall = len(added_good) / len(added_possible) if added_possible else 1.0
    return _f1(keep_precision, keep_recall), del_precision, _f1(add_precision, add_recall)


def sari(source: str, prediction: str, references) -> float:
    """Sentence SARI x 100 (HF `evaluate` semantics) of `prediction` against `references`."""
    refs = [sari_normalize(r).split(" ") for r in _as_references(references)]
    src = sari_normalize(source).split(" ")
    cand = sari_normalize(prediction).split(" ")
    keep = delete = add = 0.0
    for n in range(1, 5):
        k, d, a = _sari_ngram_scores(_ngrams(src, n), _ngrams(cand, n), [_ngrams(r, n) for r in refs])
        keep, delete, add = keep + k, delete + d, add + a
    return 100.0 * (keep + delete + add) / 12


# --- per-task scoring ---------------------------------------------------------------------------


def example_scorer(metric: str, normalize_exact_match: bool = False) -> Callable[[str, str, list], float]:
    """A function (prompt, prediction, references) -> score for the named metric."""
    if metric == "exact_match":
        return lambda prompt, pred, refs: exact_match(pred, refs, normalize_exact_match)
    if metric == "rouge_l":
        return lambda prompt, pred, refs: rouge_l(pred, refs)
    if metric == "edit_similarity":
        return lambda prompt, pred, refs: edit_similarity(pred, refs)
    if metric == "sari":
        return lambda prompt, pred, refs: sari(prompt, pred, refs)
    if metric == "first_char_accuracy":
        return lambda prompt, pred, refs: first_char_accuracy(pred, refs)
    if metric in ("bleu_1", "bleu_4"):
        order = int(metric[-1])
        return lambda prompt, pred, refs: bleu(pred, refs, order)
    if metric in ("reasoning_bleu_1", "reasoning_bleu_4"):
        order = int(metric[-1])
        return lambda prompt, pred, refs: bleu(reasoning(pred), [reasoning(r) for r in refs], order)
    if metric == "reasoning_rouge_l":
        return lambda prompt, pred, refs: rouge_l(reasoning(pred), [reasoning(r) for r in refs])
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRIC_NAMES)}")


def metric_for_task(task: str, metrics_cfg: dict) -> str:
    """The configured primary metric of a task: `per_task` override, else `default`."""
    return (metrics_cfg.get("per_task") or {}).get(task, metrics_cfg.get("default", "rouge_l"))


def metrics_of_task(task: str, metrics_cfg: dict) -> list[str]:
    """The task's primary metric, then its `secondary` ones (each once)."""
    primary = metric_for_task(task, metrics_cfg)
    secondary = (metrics_cfg.get("secondary") or {}).get(task, [])
    return [primary] + [m for m in dict.fromkeys(secondary) if m != primary]


PREDICTION_INPUTS = ("task", "instance_id", "prompt", "prediction", "references")


def score_predictions(predictions: pd.DataFrame, evaluation_cfg: dict, source="predictions") -> pd.DataFrame:
    """Mean score per task and metric -> the scores artifact's frame: one primary row per task, then
    its secondary rows; sorted by task."""
    missing = [c for c in PREDICTION_INPUTS if c not in predictions.columns]
    if missing:
        raise InputError(source, f"missing column(s) {', '.join(missing)}", field=missing[0])
    metrics_cfg = evaluation_cfg.get("metrics", {})
    normalize = bool(evaluation_cfg.get("normalize_exact_match", False))
    rows = []
    for task, group in predictions.groupby("task", sort=True):
        examples = []
        for row in group.itertuples(index=False):
            refs = row.references
            if refs is None or isinstance(refs, float) or len(refs) == 0:
                raise InputError(source, "no reference answer", record=row.instance_id, field="references")
            examples.append((str(row.prompt), row.prediction if isinstance(row.prediction, str) else "", list(refs)))
        for rank, metric in enumerate(metrics_of_task(task, metrics_cfg)):
            scorer = example_scorer(metric, normalize)
            score = sum(scorer(*example) for example in examples) / len(examples)
            log.info("%s: %s = %.2f over %d examples", task, metric, score, len(examples))
            rows.append(
                {"task": task, "metric": metric, "primary": rank == 0, "score": float(score), "n": len(examples)}
            )
    return pd.DataFrame(rows, columns=artifacts.columns("scores")).astype({"n": "int64", "primary": "bool"})
