"""The beginner's design pages: the block editor, version diffs, import/export, dataset samples.

Pages are thin: they read, call designs.services, and render. The editor itself is progressive
JavaScript (static/js/editor-*.js) over the same API the outside world uses (catalog, validate,
versions, code, runs); the page gives it its starting state through json_script blocks.
"""

from __future__ import annotations

import difflib
import io
import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.auth import signed_in_user
from accounts.models import User
from designs import services
from designs.catalog import TASK_IMAGE, TASK_LM
from designs.models import Design, DesignVersion
from designs.validation import SpecError
from library import services as library_services
from library import text_datasets
from library.models import Dataset
from library.selectors import datasets_usable_by

# Largest design file the import form reads (the API's own limit).
SAMPLE_GRID_MAX = 64


def _lang() -> str:
    return "ko" if (get_language() or "en").startswith("ko") else "en"


def starter_cards() -> list[dict]:
    """The starter designs as the dashboard shows them, in the page's language."""
    lang = _lang()
    return [
        {
            "slug": s["slug"],
            "title": s["title"][lang],
            "description": s["description"][lang],
            "dataset": s["spec"].get("dataset", ""),
            "layers": len(s["spec"].get("layers", [])),
        }
        for s in services.starter_list()
    ]


@login_required
@require_http_methods(["GET", "POST"])
def design_new(request: HttpRequest) -> HttpResponse:
    """GET: the editor on a blank design that exists only in the page until its first save (which
    creates it through the API): opening it and leaving leaves nothing behind. POST with ``starter``:
    a design opened from a starter (one click on the dashboard), saved at once."""
    if request.method == "GET":
        # ?task=language_model: a blank language model ("New language model" on the dashboard).
        task = TASK_LM if request.GET.get("task") == TASK_LM else TASK_IMAGE
        default_name = _("My language model") if task == TASK_LM else _("My CNN")
        name = (request.GET.get("name") or "").strip()[:120] or default_name
        return _render_editor(request, Design(owner=signed_in_user(request), name=name), task=task)
    slug = request.POST.get("starter", "")
    if not slug:
        return redirect("design-new")
    try:
        design = services.design_create_from_starter(owner=signed_in_user(request), slug=slug)
    except KeyError:
        messages.error(request, _("There is no such starter design."))
        return redirect("dashboard")
    return redirect("design-editor", pk=design.pk)


@login_required
@require_POST
def design_rename(request: HttpRequest, pk: int) -> HttpResponse:
    design = get_object_or_404(Design, pk=pk, owner=request.user)
    name = (request.POST.get("name") or "").strip()
    if not name:
        messages.error(request, _("Give the design a name."))
    elif len(name) > 120:
        messages.error(request, _("A design's name has at most 120 characters."))
    else:
        services.design_update(design=design, name=name)
        messages.success(request, _("Renamed to “%(name)s”.") % {"name": name})
    if request.POST.get("next") == "dashboard":
        return redirect("dashboard")
    return redirect("design-editor", pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def design_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: what deleting the design removes, and a confirm button; POST: delete it."""
    design = get_object_or_404(Design, pk=pk, owner=request.user)
    if request.method == "POST":
        try:
            services.design_delete(design=design)
        except services.DesignDeleteRefused as exc:
            messages.error(request, str(exc))
            return redirect("design-delete", pk=pk)
        messages.success(request, _("The design “%(name)s” is deleted.") % {"name": design.name})
        return redirect("dashboard")
    return render(
        request,
        "designs/design_delete.html",
        {
            "design": design,
            "versions": design.versions.count(),
            # Through the reverse relation of training.Run (designs imports nothing from training).
            "runs": design.versions.aggregate(n=Count("runs"))["n"],
        },
    )


@login_required
@require_POST
def design_import(request: HttpRequest) -> HttpResponse:
    """A design from a JSON file: BuildX's own export, a bare spec, or the original BuildX front end's format."""
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, _("Choose a JSON file to import."))
        return redirect("dashboard")
    if upload.size is None or upload.size > settings.BUILDX_MAX_SPEC_BYTES:
        messages.error(request, _("The file is too large to be a design."))
        return redirect("dashboard")
    try:
        data = json.loads(upload.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        messages.error(request, _("The file is not JSON. Export a design from BuildX and import that file."))
        return redirect("dashboard")
    spec = data.get("spec", data) if isinstance(data, dict) else data
    name = (data.get("name") if isinstance(data, dict) and isinstance(data.get("name"), str) else "") or (
        spec.get("model_name") if isinstance(spec, dict) and isinstance(spec.get("model_name"), str) else ""
    )
    try:
        design = services.design_create(
            owner=signed_in_user(request), name=(name or _("Imported design"))[:120], spec=spec
        )
    except SpecError as exc:
        problems = "; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in list(exc.fields.items())[:5])
        messages.error(request, _("The design could not be imported: %(problems)s") % {"problems": problems})
        return redirect("dashboard")
    messages.success(request, _("Imported “%(name)s”.") % {"name": design.name})
    return redirect("design-editor", pk=design.pk)


def _per_version(name: str, pk: int) -> str:
    """A version's URL with ``{n}`` for its number. Only the version's segment: with the unsaved design's
    id 0, replacing every "/0/" put ``{n}`` in the design's place too, and the editor's first save sent
    its code request to /designs/<id>/versions/{n}/."""
    head, _, tail = reverse(name, args=[pk, 0]).rpartition("/0/")
    return f"{head}/{{n}}/{tail}"


def _urls(design: Design) -> dict:
    # An unsaved design (GET /designs/new/) gets its URLs with id 0; the editor's first save creates
    # the design through ``create`` and puts the new id in them.
    pk = design.pk or 0
    urls = {
        "create": reverse("api-designs"),
        "catalog": reverse("api-catalog"),
        "validate": reverse("api-design-validate"),
        "edit": reverse("api-design-edit"),
        "design": reverse("api-design", args=[pk]),
        "versions": reverse("api-design-versions", args=[pk]),
        "version": _per_version("api-design-version", pk),
        "code": _per_version("api-design-code", pk),
        "artifacts": _per_version("api-design-artifacts", pk),
        "download": _per_version("api-design-download", pk),
        "diff": reverse("design-diff", args=[pk]),
        "export": reverse("design-export", args=[pk]),
        "version_ids": reverse("design-version-ids", args=[pk]),
        "samples": reverse("dataset-samples", args=["DATASET"]).replace("DATASET", "{name}"),
    }
    try:
        urls["runs"] = reverse("api-runs")
    except NoReverseMatch:
        pass
    if settings.LLM_ENABLED:
        # The LLM issue supplies this endpoint; until it exists, the button stays hidden.
        try:
            urls["generate"] = _per_version("api-design-generate", pk)
        except NoReverseMatch:
            pass
    return urls


def picker_datasets(user: User) -> dict[str, Any]:
    """What the editor's dataset picker adds to the catalog: each built-in set's state on this server
    (ready, or "not installed" with the operator's command) and the uploaded datasets the user may train
    on, with the same facts a built-in set has (shape, classes, mean and std)."""
    builtin = {
        row["name"]: {
            "available": row["available"],
            "message": ""
            if row["available"]
            else library_services.not_installed_message(row["name"], row["fix"]),
        }
        for row in library_services.builtin_catalog()
    }
    uploads = [
        {
            **library_services.facts_of(dataset).as_json(),
            "title": dataset.name,
            "available": True,
            "samples_url": reverse("api-dataset-samples", args=[dataset.pk]),
            "page_url": reverse("dataset-detail", args=[dataset.pk]),
        }
        for dataset in datasets_usable_by(user).exclude(kind=Dataset.Kind.TEXT).order_by("name")
    ]
    # Uploaded texts, for a language-model design: the facts a built-in corpus has, with their tokenizer.
    corpora = [
        {
            **text_datasets.corpus_facts_of(dataset).as_json(),
            "available": True,
            "page_url": reverse("dataset-detail", args=[dataset.pk]),
        }
        for dataset in datasets_usable_by(user).filter(kind=Dataset.Kind.TEXT).order_by("name")
    ]
    return {"builtin": builtin, "uploads": uploads, "corpora": corpora}


def _editor_strings() -> dict:
    """Every string the editor's JavaScript shows, translated here (the JS has no gettext of its own)."""
    return {
        "not_installed": _("not installed on this server"),
        "your_datasets": _("Your datasets"),
        "add": _("Add"),
        "add_to_column": _(
            "Add %(type)s after the selected block (at the end of the column when none is selected)"
        ),
        "add_inside": _("Add the selected palette block inside this residual block"),
        "blocked": _("waits for an earlier block"),
        "copied": _("Copied."),
        "delete": _("Delete"),
        "duplicate": _("Duplicate"),
        "drop_here": _("Drag blocks here from the palette, or use a palette block's Add button."),
        "drop_inside": _("Drag blocks into the residual block here."),
        "empty_value": _("(empty)"),
        "error": _("Error"),
        "warning": _("Warning"),
        "fix": _("Fix"),
        "hint": _("Hint"),
        "inferred": _("inferred"),
        "inferred_value": _("inferred: %(value)s"),
        "input_from": _("Input from"),
        "inputs_from": _("Inputs to merge"),
        "input_previous": _("the block before (default)"),
        "input_model": _("the model input (x)"),
        "move_up": _("Move up"),
        "move_down": _("Move down"),
        "params": _("params"),
        "output": _("output"),
        "network_error": _("The server could not be reached. Your changes are still here; try again."),
        "not_saved": _("Unsaved changes"),
        "saved": _("Saved as version %(n)s."),
        "unchanged": _("Nothing changed since version %(n)s."),
        "save_failed": _("Not saved: fix the settings marked in red."),
        "saving": _("Saving…"),
        "checking": _("Checking…"),
        "ready": _("Ready to train."),
        "has_errors": _("%(n)s error(s) to fix before this design can train."),
        "not_ready": _("Valid, but not ready to train yet: see the warnings."),
        "not_trainable": _("Not trainable on this server: it is over a limit. Change what is marked below."),
        "blocker": _("Not trainable here"),
        "import_failed": _("That file is not a design BuildX can read."),
        "imported": _("Imported. Save to keep it as a new version."),
        "loaded_version": _("Version %(n)s loaded into the editor. Save to make it the newest version."),
        "code_needs_save": _("Save the design first: the code is made from a saved version."),
        "code_unsaved": _("This is the code of version %(n)s; you have unsaved changes since."),
        "code_loading": _("Compiling…"),
        "compiled": _("Compiled by BuildX"),
        "llm": _("Written by AI"),
        "train_failed": _("Training could not start: %(message)s"),
        "starting": _("Starting…"),
        "saving_to_train": _("Saving your changes, then training them…"),
        "save_first": _(
            "Save your changes first: they could not be saved, so nothing was trained. %(message)s"
        ),
        "fix_errors_first": _("Saved, but the design has errors: fix them before training."),
        "remove": _("Remove"),
        "yes": _("yes"),
        "no": _("no"),
        "none": _("none"),
        "residual_inner": _("Inside the residual block"),
        "show_parts": _("Show parts"),
        "hide_parts": _("Hide parts"),
        "parts_of": _("Parts of %(name)s"),
        "part_heads": _("%(n)s heads"),
        "part_residual": _("+ residual (adds the input back)"),
        "parts_unknown": _("The parts show once this block's shape is known."),
        "memory": _("estimated training memory"),
        "version": _("version %(n)s"),
        "open": _("Open in editor"),
        "generating": _("Asking the AI to write the code…"),
        "ai_accepted": _("Accepted: the AI's script passed every check. Train uses it."),
        "ai_repaired": _(
            "Accepted after %(n)s repair(s): the AI's first answer failed a check, and it fixed it. Train uses it."
        ),
        "ai_fallback": _(
            "Not accepted: the AI's script failed its checks, so Train uses the compiled script."
        ),
        "ai_failed": _("The AI could not write the code, so Train uses the compiled script."),
        "ai_reasons": _("Why:"),
        "ai_option": _("Written by AI, checked (#%(id)s)"),
        "ai_passed": _("passed"),
        "ai_not_passed": _("failed"),
        "ai_ms": _("%(ms)s ms"),
        "check_static": _("Safe code: only allowed imports and calls"),
        "check_contract": _("Script contract: the design's constants, build_model and train"),
        "check_model": _("The model matches the design (parameters and output shape)"),
        "check_weights": _("The weights fit the design's model (names and shapes), so BuildX can measure it"),
        "check_smoke": _("A trial run of one batch"),
        "check_sandbox": _("A sandbox to run the check in"),
        "check_fallback": _("The compiled script is offered instead"),
        "block_help": _("About this block"),
        "task_switched": _("The design is now a %(task)s. Undo (Ctrl+Z) switches it back."),
        "task_switched_blocks": _(
            "The design is now a %(task)s. Blocks that do not belong to it are marked in red: replace them, "
            "or Undo (Ctrl+Z) to switch back."
        ),
        "vocab": _("%(n)s tokens"),
        "sample_prompt": _("The run page's samples start from “%(prompt)s”."),
        "token_ids": _("%(t)s token ids"),
        "macs_per_token": _("MACs per token"),
        "data_title_image": _("Dataset and preprocessing"),
        "data_title_lm": _("Text to learn from"),
        "diagram_help_image": _("Each box is a block; its height follows the feature-map size."),
        "diagram_help_lm": _("Each box is a block; its height follows the size of each position's vector."),
        "no_preprocessing_lm": _(
            "A language model reads the text as token ids: there is no image preprocessing to choose."
        ),
    }


@login_required
@require_GET
def design_editor(request: HttpRequest, pk: int) -> HttpResponse:
    return _render_editor(request, get_object_or_404(Design, pk=pk, owner=request.user))


def _render_editor(request: HttpRequest, design: Design, *, task: str = TASK_IMAGE) -> HttpResponse:
    """The editor on ``design``, or on a blank one of ``task`` not saved yet (no pk)."""
    latest = design.latest_version if design.pk else None
    spec = latest.spec if latest else services.blank_spec(task)
    # Plain dicts, not the rows' TypedDicts: each loses its suggestion and gains its label below.
    versions: list[dict[str, Any]] = (
        [
            dict(row)
            for row in design.versions.order_by("-number").values(
                "number", "created_at", "spec_hash", "id", "derived_from_run_id", "applied_suggestion"
            )
        ]
        if design.pk
        else []
    )
    lang = _lang()
    for v in versions:
        labels = (v.pop("applied_suggestion") or {}).get("label") or {}
        v["origin_label"] = labels.get(lang) or labels.get("en") or ""
    state = {
        "design": {"id": design.pk, "name": design.name},
        "spec": spec,
        "version": {"number": latest.number, "id": latest.pk} if latest else None,
        "lang": _lang(),
        "urls": _urls(design),
        "llm_enabled": settings.LLM_ENABLED,
        "datasets": picker_datasets(signed_in_user(request)),
    }
    return render(
        request,
        "designs/editor.html",
        {
            "design": design,
            "versions": versions,
            # The version in the editor came from "Apply" on a run's feedback: say so, with the run.
            "origin": versions[0] if versions and versions[0]["derived_from_run_id"] else None,
            "editor_state": state,
            "editor_strings": _editor_strings(),
        },
    )


@login_required
@require_GET
def design_version_ids(request: HttpRequest, pk: int) -> JsonResponse:
    """{number: id} of a design's versions: the runs API names a version by its id, the editor by its number."""
    design = get_object_or_404(Design, pk=pk, owner=request.user)
    return JsonResponse({"versions": {str(n): i for n, i in design.versions.values_list("number", "id")}})


@login_required
@require_GET
def design_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The design as a JSON file: name, description and the spec of a version (the latest by default)."""
    design = get_object_or_404(Design, pk=pk, owner=request.user)
    number = request.GET.get("version")
    version = (
        design.versions.filter(number=number).first()
        if number and number.isdigit()
        else design.latest_version
    )
    if version is None:
        raise Http404(_("This design has no saved version yet."))
    body = {
        "format": "buildx-design",
        "format_version": 1,
        "name": design.name,
        "description": design.description,
        "version": version.number,
        "spec": version.spec,
    }
    response = JsonResponse(body, json_dumps_params={"indent": 2, "ensure_ascii": False})
    stem = version.spec.get("model_name") or "design"
    response["Content-Disposition"] = f'attachment; filename="{stem}-v{version.number}.json"'
    return response


def _layer_lines(spec: dict) -> list[str]:
    """One readable line per layer ("conv1  Conv2d  out_channels=16, kernel_size=3"), nested ones indented."""
    lines: list[str] = []

    def walk(layers: list, depth: int) -> None:
        for layer in layers:
            settings_ = ", ".join(
                f"{k}={json.dumps(v, ensure_ascii=False)}"
                for k, v in layer.items()
                if k not in ("type", "name", "layers")
            )
            lines.append(
                f"{'    ' * depth}{layer.get('name', '?')}  {layer.get('type')}  {settings_}".rstrip()
            )
            if isinstance(layer.get("layers"), list):
                walk(layer["layers"], depth + 1)

    walk(spec.get("layers", []), 0)
    return lines


def _other_lines(spec: dict) -> list[str]:
    lines = [f"model_name = {spec.get('model_name')}", f"dataset = {spec.get('dataset')}"]
    for step in spec.get("preprocessing", []):
        lines.append("preprocessing: " + json.dumps(step, ensure_ascii=False, sort_keys=True))
    for key, value in sorted((spec.get("hyperparameters") or {}).items()):
        lines.append(f"{key} = {json.dumps(value)}")
    return lines


def _diff_rows(old: list[str], new: list[str]) -> list[dict]:
    rows = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [{"kind": "same", "text": line} for line in old[i1:i2]]
        else:
            rows += [{"kind": "removed", "text": line} for line in old[i1:i2]]
            rows += [{"kind": "added", "text": line} for line in new[j1:j2]]
    return rows


@login_required
@require_GET
def design_diff(request: HttpRequest, pk: int) -> HttpResponse:
    """Two versions side by side: which layers and settings were added, removed or changed."""
    design = get_object_or_404(Design, pk=pk, owner=request.user)
    versions = list(design.versions.order_by("-number"))
    if len(versions) < 2:
        return render(request, "designs/diff.html", {"design": design, "versions": versions, "too_few": True})
    by_number = {v.number: v for v in versions}

    def pick(key: str, default: DesignVersion) -> DesignVersion:
        value = request.GET.get(key, "")
        return by_number.get(int(value), default) if value.isdigit() else default

    a = pick("a", versions[1])
    b = pick("b", versions[0])
    totals = {
        "a": (a.report.get("totals") or {}).get("params"),
        "b": (b.report.get("totals") or {}).get("params"),
    }
    return render(
        request,
        "designs/diff.html",
        {
            "design": design,
            "versions": versions,
            "a": a,
            "b": b,
            "totals": totals,
            "layer_rows": _diff_rows(_layer_lines(a.spec), _layer_lines(b.spec)),
            "other_rows": _diff_rows(_other_lines(a.spec), _other_lines(b.spec)),
            "same": a.spec_hash == b.spec_hash,
        },
    )


@require_GET
def dataset_samples(request: HttpRequest, name: str) -> HttpResponse:
    """A PNG grid of sample images of a built-in dataset (one row per class), for the editor's dataset panel.

    Rendered from the engine's dataset cache through its public functions (sandbox.engine.datasets), so the
    pictures are exactly the pixels a run trains on. Public like the catalog: the datasets are not secret.
    """
    from sandbox.engine import datasets  # torch is loaded on first use only

    try:
        info = datasets.get_info(name)
    except KeyError:
        raise Http404(_("There is no such dataset.")) from None
    try:
        per_class = max(1, min(int(request.GET.get("per_class", 6)), 12))
    except ValueError:
        per_class = 6
    if not datasets.availability(info.name, data_dir=settings.DATA_DIR).available:
        raise Http404(_("This dataset has not been downloaded on this server."))
    png = _samples_png(info.name, per_class=per_class)
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "public, max-age=86400"
    return response


def _samples_png(name: str, *, per_class: int) -> bytes:
    import torch
    from PIL import Image

    from sandbox.engine import datasets

    path = datasets.ensure_cache(name, data_dir=settings.DATA_DIR, cache_dir=settings.DATA_DIR / "cache")
    data = datasets.load_cache(path)
    images, labels = data["images"], data["labels"]
    classes = len(data["class_names"])
    cells = []
    for c in range(min(classes, SAMPLE_GRID_MAX // per_class)):
        idx = (labels == c).nonzero().flatten()[:per_class]
        cells.append(images[idx])
    _, channels, h, w = images.shape
    scale = max(1, 32 // max(h, w))  # 8x8 digits become 32x32: big enough to see
    pad = 2
    rows, cols = len(cells), per_class
    grid = torch.full(
        (channels, rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad), 255, dtype=torch.uint8
    )
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            big = img.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
            top, left = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
            grid[:, top : top + h * scale, left : left + w * scale] = big
    array = grid.permute(1, 2, 0).contiguous().numpy()
    image = Image.fromarray(array[:, :, 0], mode="L") if channels == 1 else Image.fromarray(array, mode="RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
