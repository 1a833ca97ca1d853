"""Designs: the business logic behind the pages and the API (keyword-only services)."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from accounts.models import User
from designs import edits as spec_edits
from designs.catalog import TASK_LM
from designs.models import CodeArtifact, Design, DesignVersion
from designs.signals import design_deleting
from library import services as library_services

STARTERS_DIR = Path(__file__).resolve().parent / "starters"
RUNTIME_PATH = Path(settings.BASE_DIR) / "sandbox" / "engine" / "buildx_runtime.py"


class DesignNotValid(Exception):
    """The version has validation errors: it cannot be compiled. ``errors`` are the report's."""

    def __init__(self, errors: list[dict]) -> None:
        super().__init__(errors[0]["message"] if errors else "The design has errors.")
        self.errors = errors


def spec_validate(*, spec: Any, user: User | AnonymousUser | None = None) -> tuple[dict, dict]:
    """(normalised spec, report) for a spec from a client; raises validation.SpecError when it cannot be read.

    With ``user`` (every door a person uses), a spec that names an uploaded dataset the user may not use
    gets the same answer as an unknown dataset: its facts (shape, class names) never reach another user.
    """
    from designs import validation  # torch is imported on first use, not when Django starts

    if user is not None and isinstance(spec, dict):
        dataset = spec.get("dataset")
        if not library_services.usable_by(user if isinstance(user, User) else None, dataset):
            raise validation.SpecError(
                {
                    "dataset": [
                        _("dataset must be one of %(names)s; got %(value)s.")
                        % {"names": ", ".join(validation.DATASETS), "value": json.dumps(str(dataset)[:64])}
                    ]
                }
            )
    return validation.validate(spec)


def spec_matches_version(*, spec: Any, version: DesignVersion) -> bool:
    """Whether a client's spec (the editor's screen) is this version's: the same once normalised.

    A spec that cannot be read is no version's.
    """
    from designs import validation

    try:
        return validation.spec_hash(validation.normalise(spec)) == version.spec_hash
    except validation.SpecError:
        return False


class EditRefused(Exception):
    """An edit does not apply to the spec, or leaves one that cannot be read. ``index`` is the edit's."""

    def __init__(self, *, index: int, messages: list[str]) -> None:
        super().__init__(" ".join(messages))
        self.index = index
        self.messages = messages


def spec_edit(*, spec: Any, edits: list[Any]) -> dict:
    """Carry out edits (designs/edits.py's vocabulary: a fix's, a suggestion) on a spec from a client, and
    return the result normalised, as saving would store it.

    The spec is normalised first, so that edits name the layers the report names; raises
    validation.SpecError when it cannot be read, EditRefused when an edit does not apply or leaves a spec
    that cannot be read (each edit's result is normalised before the next applies).
    """
    from designs import validation

    current = validation.normalise(spec)
    for index, edit in enumerate(edits):
        try:
            current = validation.normalise(spec_edits.apply_edit(current, edit))
        except spec_edits.EditError as exc:
            raise EditRefused(index=index, messages=[str(exc)]) from exc
        except validation.SpecError as exc:
            messages = [message for field_messages in exc.fields.values() for message in field_messages]
            raise EditRefused(index=index, messages=messages) from exc
    return current


def design_create(
    *, owner: User, name: str, description: str = "", spec: Any = None, starter: str = ""
) -> Design:
    """A new design; with a spec, also its version 1 (a bad spec raises SpecError and creates nothing)."""
    with transaction.atomic():
        design = Design.objects.create(owner=owner, name=name, description=description, starter=starter)
        if spec is not None:
            design_save_version(design=design, spec=spec)
    return design


def design_update(*, design: Design, name: str | None = None, description: str | None = None) -> Design:
    if name is not None:
        design.name = name
    if description is not None:
        design.description = description
    design.save(update_fields=["name", "description", "updated_at"])
    return design


class DesignDeleteRefused(Exception):
    """The design cannot be deleted now; ``str()`` says why and what to do, for the user."""


def design_delete(*, design: Design) -> None:
    """Delete a design with its versions, code and (through the runs app's receiver of
    ``design_deleting``) its runs and their files. All or nothing: a refusal deletes nothing."""
    with transaction.atomic():
        Design.objects.select_for_update().filter(pk=design.pk).first()
        design_deleting.send(sender=Design, design=design)
        design.delete()


def design_save_version(*, design: Design, spec: Any) -> tuple[DesignVersion, bool]:
    """Save a spec as the design's next immutable version: (version, created).

    Saving the spec of the latest version again (same normalised spec, same hash) creates nothing and
    returns the latest version with created=False, so a double click or an autosave cannot pile up copies.
    Saving the spec of an older version creates a new version: going back is a change too.
    """
    from designs import validation

    normalised, report = spec_validate(spec=spec, user=design.owner)
    digest = validation.spec_hash(normalised)
    with transaction.atomic():
        # Lock the design row: two saves at once must not take the same number.
        Design.objects.select_for_update().filter(pk=design.pk).first()
        latest = design.versions.order_by("-number").first()
        if latest is not None and latest.spec_hash == digest:
            return latest, False
        version = DesignVersion.objects.create(
            design=design,
            number=(latest.number + 1) if latest else 1,
            spec=normalised,
            spec_hash=digest,
            report=report,
        )
        Design.objects.filter(pk=design.pk).update(updated_at=version.created_at)
    return version, True


def artifact_compile(*, version: DesignVersion) -> CodeArtifact:
    """The version's compiled script (a ready CodeArtifact), created on first call: idempotent per version."""
    existing = version.artifacts.filter(source=CodeArtifact.Source.COMPILED).first()
    if existing is not None:
        return existing
    if not version.is_valid:
        raise DesignNotValid(version.report.get("errors", []))
    from designs import compiler

    code = compiler.compile_version(version)
    try:
        with transaction.atomic():
            return CodeArtifact.objects.create(
                version=version,
                source=CodeArtifact.Source.COMPILED,
                status=CodeArtifact.Status.READY,
                code=code,
                code_hash=hashlib.sha256(code.encode()).hexdigest(),
                checks=[{"name": "compiled", "ok": True, "message": "Written by the BuildX compiler."}],
            )
    except IntegrityError:  # a concurrent request compiled it first; the code is the same bytes
        return version.artifacts.get(source=CodeArtifact.Source.COMPILED)


def script_filename(version: DesignVersion) -> str:
    from designs import compiler

    return f"{compiler.class_name(version.spec['model_name']).lower()}.py"


def bundle_zip(*, artifact: CodeArtifact) -> tuple[str, bytes]:
    """(zip file name, bytes): the script and buildx_runtime.py beside it, so it runs with only torch."""
    version = artifact.version
    script = script_filename(version)
    stem = script.removesuffix(".py")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        # Fixed timestamps: the same version downloads as the same bytes.
        for name, text in ((script, artifact.code), ("buildx_runtime.py", RUNTIME_PATH.read_text())):
            info = zipfile.ZipInfo(f"{stem}/{name}", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, text)
    return f"{stem}-v{version.number}.zip", buffer.getvalue()


# --- Starter designs -------------------------------------------------------------------------------


def blank_spec(task: str) -> dict[str, Any]:
    """A new design's spec before its first block: a digits CNN, or a language model of the addition corpus."""
    if task == TASK_LM:
        return {
            "model_name": "MyGPT",
            "task": TASK_LM,
            "dataset": "addition",
            "preprocessing": [],
            "layers": [],
            "hyperparameters": {},
        }
    return {
        "model_name": "MyCNN",
        "dataset": "digits",
        "preprocessing": [],
        "layers": [],
        "hyperparameters": {},
    }


@functools.cache
def starter_list() -> list[dict]:
    """The starter designs in designs/starters/*.json: [{"slug", "title", "description", "spec"}, ...]."""
    starters = []
    for path in sorted(STARTERS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        starters.append({"slug": path.stem, **data})
    starters.sort(key=lambda s: s.get("order", 100))
    return starters


def starter_get(*, slug: str) -> dict | None:
    return next((s for s in starter_list() if s["slug"] == slug), None)


def design_create_from_starter(*, owner: User, slug: str, name: str = "") -> Design:
    starter = starter_get(slug=slug)
    if starter is None:
        raise KeyError(slug)
    return design_create(
        owner=owner,
        name=name or starter["title"]["en"],
        description=starter["description"]["en"],
        spec=starter["spec"],
        starter=slug,
    )


# --- LLM code generation ---------------------------------------------------------------------------


class GenerationNotAvailable(Exception):
    """The LLM is not configured, or the design cannot be compiled: nothing to ask for."""


def artifact_request_generation(*, version: DesignVersion, user: User) -> CodeArtifact:
    """A pending LLM artifact for the version, and the generate_code job that fills it in."""
    from buildx import llm

    if not llm.is_configured():
        raise GenerationNotAvailable("not_configured")
    if not version.is_valid:
        raise DesignNotValid(version.report.get("errors", []))
    artifact = CodeArtifact.objects.create(
        version=version, source=CodeArtifact.Source.LLM, status=CodeArtifact.Status.PENDING
    )
    from designs.actors import generate_code

    transaction.on_commit(lambda: generate_code.send(artifact.pk, user.pk))
    return artifact


def artifact_claim(*, artifact_id: int) -> CodeArtifact | None:
    """Take a pending LLM artifact for generation with a compare-and-set (pending → checking), as
    ``run_claim`` takes a run: of two jobs sent for one artifact, one gets it and the other None."""
    taken = CodeArtifact.objects.filter(
        pk=artifact_id, source=CodeArtifact.Source.LLM, status=CodeArtifact.Status.PENDING
    ).update(status=CodeArtifact.Status.CHECKING)
    if not taken:
        return None
    return CodeArtifact.objects.select_related("version__design").get(pk=artifact_id)


def artifact_fail(*, artifact_id: int, error: str) -> CodeArtifact | None:
    """Mark this one artifact failed if it is still being generated (the job that had it crashed); the
    version's other artifacts, other jobs' work, are left alone. None when it had already ended."""
    failed = CodeArtifact.objects.filter(
        pk=artifact_id, status__in=[CodeArtifact.Status.PENDING, CodeArtifact.Status.CHECKING]
    ).update(status=CodeArtifact.Status.FAILED, error=error)
    return CodeArtifact.objects.select_related("version__design").get(pk=artifact_id) if failed else None


def artifact_generate(
    *, version: DesignVersion, user: User, artifact: CodeArtifact | None = None
) -> CodeArtifact:
    """Ask the LLM for the version's script, check it, repair it up to twice, else offer the compiled one.

    Fills in ``artifact`` (claimed with ``artifact_claim``: the one the API answered with), or a new one.
    Every attempt is recorded (latency, tokens, the checks); the artifact ends ready or rejected, and a
    rejected one names the compiled artifact offered instead and why (``error``, ``checks``).
    """
    import time

    from django.utils import translation

    from buildx import llm
    from designs import codegen

    if artifact is None:
        artifact = CodeArtifact.objects.create(
            version=version, source=CodeArtifact.Source.LLM, status=CodeArtifact.Status.CHECKING
        )

    compiled = artifact_compile(version=version)
    reference = compiled.code
    started = time.monotonic()
    attempts: list[dict] = []
    reasons: list[str] = []
    code = ""
    outcome: codegen.CheckOutcome | None = None
    codegen.prepare_checks()  # the sandbox warms up while the LLM writes
    with translation.override("en"):  # the prompt and the repair messages are English for the model
        messages = codegen.build_messages(spec=version.spec, report=version.report, reference=reference)
        for n in range(1, codegen.MAX_REPAIRS + 2):
            purpose = "codegen" if n == 1 else "code_repair"
            try:
                answer = llm.chat(user=user, purpose=purpose, messages=messages)
            except llm.LLMError as exc:
                attempts.append({"n": n, "error": exc.code, "message": str(exc), "checks": []})
                if outcome is not None:
                    reasons.extend(outcome.errors)  # what the last answer got wrong, before the LLM failed
                reasons.append(str(exc))
                break
            artifact.prompt_tokens += answer.tokens_in
            artifact.completion_tokens += answer.tokens_out
            code = codegen.extract_code(answer.text)
            outcome = codegen.run_checks(code, reference=reference, spec=version.spec, report=version.report)
            attempts.append(
                {
                    "n": n,
                    "latency_ms": answer.latency_ms,
                    "tokens": answer.tokens_in + answer.tokens_out,
                    "tokens_in": answer.tokens_in,
                    "tokens_out": answer.tokens_out,
                    "cached": answer.cached,
                    "check_ms": outcome.ms,
                    "sandboxed": outcome.sandboxed,
                    "ok": outcome.ok,
                    "checks": [c.as_dict() for c in outcome.checks],
                }
            )
            if outcome.ok:
                break
            if n <= codegen.MAX_REPAIRS and outcome.repairable:
                messages = [
                    *messages,
                    {"role": "assistant", "content": answer.text},
                    codegen.repair_message(outcome),
                ]
            else:
                reasons.extend(outcome.errors)
                break

    artifact.attempts = attempts
    artifact.latency_ms = int((time.monotonic() - started) * 1000)
    artifact.code = code
    artifact.code_hash = hashlib.sha256(code.encode()).hexdigest() if code else ""
    if outcome is not None and outcome.ok:
        artifact.status = CodeArtifact.Status.READY
        artifact.checks = [c.as_dict() for c in outcome.checks]
        artifact.error = ""
    else:
        artifact.status = CodeArtifact.Status.REJECTED
        checks = [c.as_dict() for c in outcome.checks] if outcome is not None else []
        checks.append(
            {
                "name": "fallback",
                "ok": True,
                "message": "The compiled script is offered instead.",
                "artifact": compiled.pk,
            }
        )
        artifact.checks = checks
        artifact.error = "\n".join(reasons) or "The AI could not write a script that passes the checks."
    artifact.save()
    return artifact
