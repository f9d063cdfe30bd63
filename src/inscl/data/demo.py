"""The built-in demo benchmark: six small instruction tasks generated deterministically from a seed.

The tasks come in three pairs that share their input surface but not their answers:
sentiment/topic (the same short sentences), addition/compare (the same digit pairs) and
reverse/sort_letters (the same letter triples). A model can only tell a pair apart by reading
the instruction, so sequential training on one member overwrites the other and forgetting is
visible. Answers are one word, one or two digits, or three letters, so exact match is the metric.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from inscl.core.hashing import stable_seed
from inscl.core.io import InputError
from inscl.data.rows import SourceRows, instance_row

POSITIVE = ("great", "lovely", "fun", "amazing", "wonderful", "nice", "perfect", "excellent")
NEGATIVE = ("awful", "boring", "terrible", "bad", "dull", "horrible", "poor", "weak")
TOPICS = {
    "food": ("pizza", "soup", "bread", "cake", "salad", "pasta"),
    "sports": ("match", "game", "team", "race", "coach", "player"),
    "music": ("song", "band", "album", "concert", "singer", "guitar"),
    "travel": ("hotel", "flight", "beach", "trip", "train", "museum"),
}
SENTENCES = (  # the deciding word moves, so no task is solved from one fixed position
    "the {noun} was {adj}",
    "{adj} {noun}, honestly",
    "i found the {noun} {adj} this week",
    "such {adj} {noun} in town",
    "our {noun} felt {adj} to me",
    "a really {adj} {noun} again",
)
NUMBER_PAIRS = ("{a} and {b}", "{a}, {b}")
MAX_DIGIT = 6  # few enough sums for a tiny model to learn in one stage
LETTERS = "abcdefgh"


@dataclass(frozen=True)
class DemoTask:
    instructions: tuple[str, ...]
    inputs: tuple[tuple[str, str], ...]  # every (input, answer) the task can produce


def _sentences(label_of: Callable[[str, str], str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for template in SENTENCES:
        for topic, nouns in TOPICS.items():
            for noun in nouns:
                for adj in POSITIVE + NEGATIVE:
                    pairs.append((template.format(noun=noun, adj=adj), label_of(topic, adj)))
    return tuple(pairs)


def _number_pairs(answer_of: Callable[[int, int], int | None]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for template in NUMBER_PAIRS:
        for a, b in itertools.product(range(MAX_DIGIT + 1), repeat=2):
            answer = answer_of(a, b)
            if answer is not None:
                pairs.append((template.format(a=a, b=b), str(answer)))
    return tuple(pairs)


def _letter_triples(answer_of: Callable[[tuple[str, ...]], tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    return tuple((" ".join(t), " ".join(answer_of(t))) for t in itertools.permutations(LETTERS, 3))


DEMO_TASKS: dict[str, DemoTask] = {
    "sentiment": DemoTask(
        (
            "Is the sentiment of this review positive or negative?",
            "Classify the review as positive or negative.",
            "Decide whether the writer liked it. Answer positive or negative.",
            "Label the opinion in the sentence: positive or negative.",
            "Tell me if this comment is positive or negative.",
            "What is the tone of the text? Reply with positive or negative.",
        ),
        _sentences(lambda topic, adj: "positive" if adj in POSITIVE else "negative"),
    ),
    "addition": DemoTask(
        (
            "Add the two numbers.",
            "What is the sum of these numbers?",
            "Compute the total of the two numbers.",
            "Give the result of adding the numbers.",
            "Sum the numbers and write the answer.",
            "Calculate the first number plus the second number.",
        ),
        _number_pairs(lambda a, b: a + b),
    ),
    "reverse": DemoTask(
        (
            "Reverse the order of the letters.",
            "Write the letters backwards.",
            "Give the letters in reverse order.",
            "Read the letters from right to left and write them.",
            "Flip the sequence of letters.",
            "Output the letters from last to first.",
        ),
        _letter_triples(lambda t: t[::-1]),
    ),
    "topic": DemoTask(
        (
            "What is the topic of this sentence? Answer food, sports, music or travel.",
            "Classify the sentence into a topic: food, sports, music or travel.",
            "Which subject is this about: food, sports, music or travel?",
            "Name the category of the text (food, sports, music, travel).",
            "Pick the theme of the sentence from food, sports, music and travel.",
            "Tell me what the sentence talks about: food, sports, music or travel.",
        ),
        _sentences(lambda topic, adj: topic),
    ),
    "compare": DemoTask(
        (
            "Which of the two numbers is larger?",
            "Write the bigger number.",
            "Return the maximum of the two numbers.",
            "Pick the greater of the numbers.",
            "Tell me which number is higher.",
            "Output the largest number given.",
        ),
        _number_pairs(lambda a, b: max(a, b) if a != b else None),
    ),
    "sort_letters": DemoTask(
        (
            "Sort the letters alphabetically.",
            "Put the letters in alphabetical order.",
            "Arrange the letters from a to z.",
            "Write the letters sorted in dictionary order.",
            "Order the letters alphabetically and write them.",
            "Give the letters in alphabetical order.",
        ),
        _letter_triples(lambda t: tuple(sorted(t))),
    ),
}


def generate_demo(
    seed: int = 0, n_train: int = 240, n_test: int = 60, tasks=None, config_key: str = "data.sources"
) -> list[dict]:
    """Rows {task, split, index, instruction, input, output} of the demo benchmark.

    Within a task, no (instruction, input) pair repeats, so no test prompt is seen verbatim in training.
    """
    names = list(DEMO_TASKS) if tasks is None else list(tasks)
    rows = []
    for name in names:
        if name not in DEMO_TASKS:
            raise InputError(
                "config",
                f"unknown demo task '{name}'; expected some of {list(DEMO_TASKS)}",
                field=f"{config_key}.tasks",
            )
        task = DEMO_TASKS[name]
        space = len(task.instructions) * len(task.inputs)
        if n_train + n_test > space:
            raise InputError(
                "config",
                f"demo task '{name}' has {space} distinct examples, fewer than n_train + n_test = {n_train + n_test}",
                field=f"{config_key}.n_train",
            )
        rng = random.Random(stable_seed(seed, "demo", name))
        chosen = rng.sample(range(space), n_train + n_test)
        for index, flat in enumerate(chosen):
            instruction = task.instructions[flat % len(task.instructions)]
            text, answer = task.inputs[flat // len(task.instructions)]
            rows.append(
                {
                    "task": name,
                    "split": "train" if index < n_train else "test",
                    "index": index,
                    "instruction": instruction,
                    "input": text,
                    "output": [answer],
                }
            )
    return rows


def load_demo(source: dict, base_dir=".", key: str = "data.sources[0]") -> SourceRows:
    """Instance rows of the demo benchmark as a data source (`base_dir` unused: nothing is read)."""
    name = source["name"]
    generated = generate_demo(
        seed=source.get("seed", 0),
        n_train=source.get("n_train", 240),
        n_test=source.get("n_test", 60),
        tasks=source.get("tasks"),
        config_key=key,
    )
    rows = []
    for g in generated:
        local = f"{g['task']}/{g['split']}/{g['index']:05d}"
        rows.append(
            instance_row(name, g["task"], g["task"], None, local, g["instruction"], g["input"], g["output"], g["split"])
        )
    return SourceRows(rows)
