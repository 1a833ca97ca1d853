"""The built-in text corpora's facts, written once: names, alphabets, prompts, help, splits.

Pure data (no torch, no Django), like dataset_facts.py for the image sets, so that every layer can read
it: the engine's builders (sandbox/engine/corpora.py) make the text and its token cache, the designs
catalog (designs/catalog.py) serves the corpora to the editor and validates language-model specs against
them (the vocabulary size a character-level model must end with comes from here), and the diagnosis
reads them through the catalog.

A corpus has a fixed alphabet: the character tokenizer's vocabulary is the alphabet in this order, so
that validation knows the vocabulary size before the corpus is ever built, and the same id means the
same character on every machine. Characters outside the alphabet are dropped when the corpus is built
(the Python corpus keeps printable ASCII, newlines and tabs only).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

TASK_IMAGE = "image_classification"
TASK_LM = "language_model"
TASKS = (TASK_IMAGE, TASK_LM)

# Shares of the token stream, by position: the first 90% trains, the next 5% validates, the last 5% tests.
TRAIN_SHARE = 0.9
VAL_SHARE = 0.05


@dataclass(frozen=True)
class CorpusFacts:
    name: str  # canonical, as specs and cache files name it
    title: str
    alphabet: str  # the character tokenizer's vocabulary, id = position
    sample_prompt: str  # what the run page's samples start from
    help_en: str
    help_ko: str
    aliases: tuple[str, ...] = ()
    # "addition": test lines are "a+b=c"; the trusted evaluation also measures exact-match answers.
    exact_match: bool = False
    kind: str = "text"
    # An uploaded text dataset (library app, "upload-<id>") is tokenised once, when it is checked: its
    # tokenizer and vocabulary are facts of the dataset, not hyperparameters. "" for a built-in corpus.
    tokenizer: str = ""
    fixed_vocab_size: int = 0

    @property
    def vocab_size(self) -> int:
        return self.fixed_vocab_size or len(self.alphabet)

    def as_json(self) -> dict:
        """What GET /api/v1/catalog/ lists for the corpus."""
        return {
            "name": self.name,
            "kind": self.kind,
            "title": self.title,
            "vocab_size": self.vocab_size,
            "alphabet": self.alphabet,
            "sample_prompt": self.sample_prompt,
            "help": {"en": self.help_en, "ko": self.help_ko},
            "tokenizer": self.tokenizer,
        }


ADDITION = CorpusFacts(
    "addition",
    "Addition (generated)",
    "0123456789+=\n",
    "12+35=",
    'Every sum of two numbers from 0 to 99, one a line, numbers of a fixed width ("07+45=052"). A model that learns it can add '
    "numbers it never saw: the test lines are sums held out from training.",
    '0부터 99까지 두 수의 모든 덧셈, 한 줄에 하나, 자릿수를 맞춘 숫자("07+45=052"). 이것을 배운 모델은 처음 보는 수도 더할 수 '
    "있습니다: 테스트 줄은 학습에서 뺀 덧셈입니다.",
    exact_match=True,
)
BRACKETS = CorpusFacts(
    "brackets",
    "Balanced brackets (generated)",
    "()[]{}\n",
    "([",
    'Random balanced bracket strings, one a line ("([]{})"): the model must remember what it opened.',
    '무작위로 만든 짝이 맞는 괄호 문자열, 한 줄에 하나("([]{})"): 모델은 무엇을 열었는지 기억해야 합니다.',
)
GRAMMAR = CorpusFacts(
    "grammar",
    "A small grammar (generated)",
    " .abcdefghijklmnopqrstuvwxyz\n",
    "the ",
    'Sentences from a small English grammar ("the small cat sees a dog ."): words, agreement and '
    "sentence ends.",
    '작은 영어 문법으로 만든 문장("the small cat sees a dog ."): 단어, 일치, 문장의 끝을 배웁니다.',
)
PYTHON = CorpusFacts(
    "python",
    "Python source (standard library)",
    "\t\n" + "".join(chr(c) for c in range(32, 127)),
    "def ",
    "Python source code from the standard library that ships with Python, built on first use: "
    "a model that writes Python.",
    "파이썬에 포함된 표준 라이브러리의 소스 코드(처음 쓸 때 만듭니다): 파이썬을 쓰는 모델.",
    aliases=("python-stdlib", "stdlib"),
)

# In the order pages and the catalog list them.
CORPORA: dict[str, CorpusFacts] = {facts.name: facts for facts in (ADDITION, BRACKETS, GRAMMAR, PYTHON)}

assert all(len(set(c.alphabet)) == len(c.alphabet) for c in CORPORA.values())
assert set(string.printable) - set("\r\x0b\x0c") == set(PYTHON.alphabet)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


_BY_KEY = {_key(n): facts for facts in CORPORA.values() for n in (facts.name, *facts.aliases)}


def lookup(name: object) -> CorpusFacts | None:
    """The built-in corpus a spec means ("addition", "Python", "python-stdlib"), or None."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    return _BY_KEY.get(_key(name))


def dataset_key(name: str, *, tokenizer: str = "char", vocab_size: int | None = None) -> str:
    """The key a run names its text dataset by: "addition", or "python:bpe512" for a BPE tokenizer."""
    facts = lookup(name)
    if facts is None:
        raise ValueError(f"no built-in corpus {name!r}")
    return facts.name if tokenizer == "char" else f"{facts.name}:bpe{int(vocab_size or 512)}"


def parse_key(key: str) -> tuple[str, str, int | None] | None:
    """(corpus, tokenizer, vocab size) of a text dataset key, or None for anything else (an image set)."""
    name, _, tokenizer = key.partition(":")
    facts = lookup(name)
    if facts is None:
        return None
    if not tokenizer:
        return facts.name, "char", None
    if tokenizer.startswith("bpe") and tokenizer[3:].isdigit() and 257 <= int(tokenizer[3:]) <= 16384:
        return facts.name, "bpe", int(tokenizer[3:])
    return None
