"""Text datasets people bring: a plain-text upload, tokenised at the check into the built-in corpora's cache.

Beside the image path in library/services.py, and through its public doors: the row, the quota, the
chunked upload (``dataset_create`` and ``dataset_receive``), sharing, deleting and the files are the same;
what differs is the kind (``Dataset.Kind.TEXT``), the size limit (``DATASET_TEXT_MAX_BYTES``), the tokenizer
chosen at upload (character-level or byte-level BPE with a vocabulary size) and the check: the text is
read and tokenised in a box of its own (sandbox/text_check.py; UTF-8 or refused, bounded, never
decompressed), and this process writes the cache from the box's answer only once it has checked it against
the text. A refusal's message is written here from its code (``problem_message``). A language-model design
names one as ``"dataset": "upload-<id>"``; ``lookup_corpus`` gives validation and the compiler the same
``CorpusFacts`` a built-in corpus has, with the tokenizer and vocabulary it was made with.
"""

from __future__ import annotations

import logging
from typing import IO, Any

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import User
from buildx.live import publish, user_group
from library import services
from library.models import Dataset, spec_id
from sandbox.engine import corpus_facts
from sandbox.engine.corpus_facts import CorpusFacts

logger = logging.getLogger(__name__)

TOKENIZERS = ("char", "bpe")
MIN_BPE_VOCAB, MAX_BPE_VOCAB = 257, 16384  # a byte-level BPE has the 256 bytes, then its merges
DEFAULT_BPE_VOCAB = 512


def text_dataset_create(
    *,
    owner: User,
    name: str,
    size: int,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    description: str = "",
    filename: str = "",
) -> Dataset:
    """A text dataset waiting for its file's ``size`` bytes (then ``services.dataset_receive``, as a zip's)."""
    if tokenizer not in TOKENIZERS:
        raise services.DatasetRefused("invalid", _("The tokenizer must be char or bpe."), field="tokenizer")
    if tokenizer == "bpe":
        vocab_size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
        if not MIN_BPE_VOCAB <= vocab_size <= MAX_BPE_VOCAB:
            raise services.DatasetRefused(
                "invalid",
                _("The vocabulary size must be between %(min)s and %(max)s.")
                % {"min": MIN_BPE_VOCAB, "max": MAX_BPE_VOCAB},
                field="vocab_size",
            )
    else:
        vocab_size = None  # the characters of the text decide it
    if size > settings.DATASET_TEXT_MAX_BYTES:
        raise services.DatasetRefused(
            "too_large",
            _("The text file is %(size)s MB; the largest this server takes is %(max)s MB.")
            % {"size": f"{size / 2**20:.1f}", "max": f"{settings.DATASET_TEXT_MAX_BYTES / 2**20:.0f}"},
            field="size",
            status=413,
        )
    dataset = services.dataset_create(
        owner=owner, name=name, size=size, description=description, filename=filename
    )
    facts = {"tokenizer": tokenizer, "vocab_size": vocab_size}
    Dataset.objects.filter(pk=dataset.pk).update(kind=Dataset.Kind.TEXT, text_facts=facts)
    dataset.kind, dataset.text_facts = Dataset.Kind.TEXT, facts
    return dataset


def text_upload_whole(*, owner: User, name: str, file: IO[bytes], size: int, **fields: Any) -> Dataset:
    """A whole text file in one request (an API client's multipart upload): create, then the chunks."""
    dataset = text_dataset_create(owner=owner, name=name, size=size, **fields)
    offset = 0
    while offset < size:
        length = min(settings.DATASET_CHUNK_BYTES, size - offset)
        dataset = services.dataset_receive(dataset=dataset, offset=offset, length=length, stream=file)
        offset += length
    return dataset


# --- The check (in a worker) -----------------------------------------------------------------------


def text_check(*, dataset_id: int, entry: list[str] | None = None, code: str = "") -> Dataset | None:
    """Check an uploaded text in a box of its own and write its cache: ready, or rejected with the reason.

    The text is tokenised in the box (sandbox/text_check.py), never here: this process reads the text's
    bytes again, checks the box's tokens and tokenizer against it, and writes the cache and the facts from
    what it checked. Any failure of the check itself rejects the dataset rather than leaving it "checking"
    for ever. ``entry`` and ``code``: another program in the box (tests: an attacker who took the check over).
    """
    # torch: only in the worker
    from sandbox.engine import text_upload
    from sandbox.text_check import check_text

    dataset = Dataset.objects.filter(
        pk=dataset_id, status=Dataset.Status.CHECKING, kind=Dataset.Kind.TEXT
    ).first()
    if dataset is None:
        return None
    dataset.progress = {"stage": "tokenising", "done": 0, "total": 1}
    Dataset.objects.filter(pk=dataset_id).update(progress=dataset.progress)
    publish(user_group(dataset.owner_id), services.status_message(dataset))
    cache_path = services.cache_path(dataset)
    try:
        check = check_text(
            text_path=services.upload_path(dataset),
            work_path=services.dataset_folder(dataset) / "check.safetensors",
            tokenizer=dataset.text_facts.get("tokenizer", "char"),
            vocab_size=dataset.text_facts.get("vocab_size"),
            limits=text_upload.TextLimits(max_bytes=settings.DATASET_TEXT_MAX_BYTES),
            name=dataset.spec_name,
            wall_limit_s=settings.DATASET_CHECK_WALL_S,
            memory_bytes=settings.DATASET_CHECK_MEMORY_BYTES,
            entry=entry,
            code=code,
        )
        services.log_check_end(dataset_id, check)
        if not check.ok or check.cache is None or check.facts is None:
            return _reject(dataset, check.problems[0] if check.problems else {"code": "check_failed"})
        text_upload.write_cache(check.cache, cache_path)
        made = check.facts
    except Exception as exc:  # noqa: BLE001 - whatever broke, the dataset ends rejected, with the reason
        logger.exception("The check of text dataset %s failed", dataset_id)
        return _reject(dataset, {"code": "check_failed", "params": {"error": type(exc).__name__}})
    Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.CHECKING).update(
        status=Dataset.Status.READY,
        text_facts={
            "tokenizer": made.tokenizer,
            "vocab_size": made.vocab_size,
            "chars": made.chars,
            "lines": made.lines,
            "tokens": made.tokens,
            "sample": made.sample,
            "prompt": made.prompt,
            "alphabet": made.alphabet,
        },
        content_hash=made.content_hash,
        cache_bytes=cache_path.stat().st_size,
        problems=[],
        warnings=[],
        progress={"stage": "ready", "done": 1, "total": 1},
        checked_at=timezone.now(),
    )
    dataset.refresh_from_db()
    publish(user_group(dataset.owner_id), services.status_message(dataset))
    return dataset


def _reject(dataset: Dataset, answer: dict[str, Any]) -> Dataset:
    """Rejected with one problem, its message written here from the code (in English, as stored)."""
    problem = {"entry": "", "code": str(answer.get("code")), "params": dict(answer.get("params") or {})}
    with translation.override("en"):
        problem["message"] = problem_message(problem)
    Dataset.objects.filter(pk=dataset.pk).update(
        status=Dataset.Status.REJECTED,
        problems=[problem],
        more_problems=0,
        warnings=[],
        checked_at=timezone.now(),
    )
    # Nothing of a rejected upload is kept but the answer: the file may be hostile.
    for path in (services.upload_path(dataset), services.cache_path(dataset)):
        path.unlink(missing_ok=True)
    dataset.refresh_from_db()
    publish(user_group(dataset.owner_id), services.status_message(dataset))
    return dataset


def problem_message(problem: dict[str, Any]) -> str:
    """A text check's problem in the reader's language (the worker stored it in English)."""
    p = problem.get("params") or {}
    messages = {
        "too_large": lambda: _("The file is larger than %(max)s MB.") % {"max": p.get("max_mb")},
        "empty": lambda: _("The file is empty."),
        "binary": lambda: _("This is not a text file (it holds bytes that are not text)."),
        "not_utf8": lambda: (
            _("The file is not UTF-8 text: byte %(offset)s cannot be decoded. Save it as UTF-8.")
            % {"offset": p.get("offset")}
        ),
        "too_few_characters": lambda: (
            _("The text has %(chars)s characters; a language model needs at least %(min)s.")
            % {"chars": p.get("chars"), "min": p.get("min")}
        ),
        "too_many_characters": lambda: (
            _(
                "The text has %(chars)s different characters; a character-level tokenizer takes at most "
                "%(max)s. Choose byte-level BPE."
            )
            % {"chars": p.get("chars"), "max": p.get("max")}
        ),
        "split_too_small": lambda: (
            _(
                "The last tenth of the text validates and tests, split at line starts, but the lines are too "
                "long or too few: the validation part has %(val)s tokens and the test part %(test)s; each needs "
                "%(min)s. Add text or break long lines."
            )
            % {"val": p.get("val"), "test": p.get("test"), "min": p.get("min")}
        ),
        # The check itself ended without an answer to use (sandbox/text_check.py).
        "check_out_of_memory": lambda: (
            _(
                "Checking this text needed more than %(mb)s MB of memory, so it was stopped. Send a smaller text."
            )
            % {"mb": settings.DATASET_CHECK_MEMORY_BYTES // 2**20}
        ),
        "check_timeout": lambda: (
            _(
                "Checking this text took longer than %(seconds)s seconds, so it was stopped. "
                "Send a smaller text, or split it into parts."
            )
            % {"seconds": settings.DATASET_CHECK_WALL_S}
        ),
        "check_failed": lambda: _("The check of this text failed. Try again, or upload the text again."),
        "check_forged": lambda: _(
            "The check of this text gave an answer that does not hold together, so the text was refused. "
            "Check that the file is plain UTF-8 text and upload it again; if it happens again, tell whoever "
            "runs this site (your instructor or its administrator): the cause is in its log."
        ),
    }
    found = messages.get(str(problem.get("code")))
    return found() if found else str(problem.get("message", ""))


# --- What designs, runs and generation read ---------------------------------------------------------


def corpus_facts_of(dataset: Dataset) -> CorpusFacts:
    """A ready text dataset as a language-model design sees it: the facts a built-in corpus has."""
    facts = dataset.text_facts
    return CorpusFacts(
        name=dataset.spec_name,
        title=dataset.name,
        alphabet=str(facts.get("alphabet", "")),
        sample_prompt=str(facts.get("prompt", "")),
        help_en=dataset.description or dataset.name,
        help_ko=dataset.description or dataset.name,
        tokenizer=str(facts.get("tokenizer", "char")),
        fixed_vocab_size=int(facts.get("vocab_size") or 0),
    )


def text_dataset_by_spec_name(name: object) -> Dataset | None:
    """The ready uploaded text dataset a spec names (``upload-<id>``), whoever owns it, or None.

    Who may use it is decided at the doors (``services.usable_by``), as for images."""
    pk = spec_id(name)
    if pk is None:
        return None
    return Dataset.objects.filter(pk=pk, status=Dataset.Status.READY, kind=Dataset.Kind.TEXT).first()


def lookup_corpus(name: object) -> CorpusFacts | None:
    """A built-in corpus ("addition") or a ready uploaded text ("upload-17"), by the name a spec uses."""
    found = corpus_facts.lookup(name)
    if found is not None:
        return found
    dataset = text_dataset_by_spec_name(name)
    return corpus_facts_of(dataset) if dataset is not None else None
