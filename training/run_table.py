"""The runs table: its columns, and the view a query string asks for (sort, filters, columns, scope).

One parser and one queryset for the page (/runs/) and the API (GET /api/v1/runs/), so a link copied
from either shows the same runs in the same order. Sorting and filtering happen in SQL, hyperparameters
included (a JSON key read, on PostgreSQL and SQLite alike); a page costs the same queries whatever the
number of runs.

Query string (every key optional)::

    sort=-hp.learning_rate     a column key, "-" first for descending (default -created)
    cols=design,hp.lr,...      the columns shown (default DEFAULT_COLUMNS)
    design=<id>  dataset=<name>  status=succeeded[,failed]  tag=<name>
    hp.<name>.min=0.001  hp.<name>.max=0.1      a number hyperparameter's range (inclusive)
    hp.<name>=adam                              a choice hyperparameter's value
    archived=1|true (only archived)  all (both)  (default: not archived)
    scope=students                              an instructor's students' runs, not their own
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from django.core.paginator import Page, Paginator
from django.db.models import Expression, F, Prefetch, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.http import QueryDict
from django.urls import reverse
from django.utils.dateformat import format as date_format
from django.utils.functional import Promise
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.timezone import localtime
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.admin_scoping import student_ids_of
from accounts.models import Membership, User
from buildx.templatetags.buildx_format import NONE, percent, plain
from designs.catalog import HYPERPARAMETERS, LM_HYPERPARAMETERS
from designs.models import Design, DesignVersion
from training.expressions import JsonNumber
from training.models import Run, RunTag

PAGE_SIZE = 50
SCOPES = ("mine", "students")


@dataclass(frozen=True)
class Column:
    key: str  # in the URL: sort=<key>, cols=<key>
    label: str | Promise
    kind: str = "text"  # text | number | choice (a hyperparameter's) | none (not sortable)
    order_by: str = ""  # the field or annotation sorted on; "" = not sortable
    hyperparameter: str = ""  # the key in Run.hyperparameters


def _hyperparameter_columns() -> list[Column]:
    columns: dict[str, Column] = {}
    for param in (*HYPERPARAMETERS, *LM_HYPERPARAMETERS):
        if param.name in columns or param.kind not in ("int", "float", "choice"):
            continue
        kind = "choice" if param.kind == "choice" else "number"
        columns[param.name] = Column(
            key=f"hp.{param.name}",
            label=param.name,
            kind=kind,
            order_by=f"hp_{param.name}",
            hyperparameter=param.name,
        )
    return list(columns.values())


HYPERPARAMETER_COLUMNS = _hyperparameter_columns()
COLUMNS: list[Column] = [
    Column("id", _("Run"), "number", "pk"),
    Column("owner", _("Student"), "text", "owner__email"),
    Column("design", _("Design"), "text", "design_version__design__name"),
    Column("version", _("Version"), "number", "design_version__number"),
    Column("dataset", _("Dataset"), "text", "dataset"),
    *HYPERPARAMETER_COLUMNS,
    Column("status", _("Status"), "text", "status"),
    Column("epochs", _("Epochs"), "number", "epoch"),
    Column("best", _("Best validation accuracy"), "number", "best_val_acc"),
    Column("test", _("Test accuracy"), "number", "test_accuracy"),
    Column("duration", _("Duration"), "number", "run_seconds"),
    Column("device", _("Device"), "text", "device"),
    Column("created", _("Started"), "number", "created_at"),
    Column("tags", _("Tags"), "none"),
    Column("note", _("Note"), "text", "note"),
]
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}
HYPERPARAMETER_BY_NAME = {c.hyperparameter: c for c in HYPERPARAMETER_COLUMNS}
DEFAULT_COLUMNS = [
    "id",
    "design",
    "version",
    "dataset",
    "hp.learning_rate",
    "hp.batch_size",
    "hp.optimizer",
    "status",
    "epochs",
    "best",
    "test",
    "duration",
    "device",
    "tags",
]
DEFAULT_SORT = "-created"
NOT_NULL_SORTS = {
    "id",
    "owner",
    "design",
    "version",
    "dataset",
    "status",
    "epochs",
    "duration",
    "device",
    "created",
    "note",
}
ARCHIVED = {"": "hide", "0": "hide", "false": "hide", "1": "only", "true": "only", "all": "all"}


def hyperparameter_expression(column: Column) -> Expression:
    if column.kind == "number":
        return JsonNumber("hyperparameters", column.hyperparameter)
    return KeyTextTransform(column.hyperparameter, "hyperparameters")


@dataclass
class TableQuery:
    """What a query string asks of the runs table, checked: ``errors`` maps a parameter to what is
    wrong with it (the API answers 400 with them; the page shows them and ignores those values)."""

    sort: str = DEFAULT_SORT
    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    scope: str = "mine"
    design: int | None = None
    dataset: str = ""
    statuses: list[str] = field(default_factory=list)
    tag: str = ""
    archived: str = "hide"
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def sort_key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def params(self) -> list[tuple[str, str]]:
        """The query string that gives this view back (defaults left out): links keep the view."""
        out: list[tuple[str, str]] = []
        if self.scope != "mine":
            out.append(("scope", self.scope))
        if self.design is not None:
            out.append(("design", str(self.design)))
        if self.dataset:
            out.append(("dataset", self.dataset))
        if self.statuses:
            out.append(("status", ",".join(self.statuses)))
        if self.tag:
            out.append(("tag", self.tag))
        if self.archived != "hide":
            out.append(("archived", "1" if self.archived == "only" else "all"))
        for name, (low, high) in self.ranges.items():
            if low is not None:
                out.append((f"hp.{name}.min", _number_text(low)))
            if high is not None:
                out.append((f"hp.{name}.max", _number_text(high)))
        for name, value in self.choices.items():
            out.append((f"hp.{name}", value))
        if self.columns != DEFAULT_COLUMNS:
            out.append(("cols", ",".join(self.columns)))
        if self.sort != DEFAULT_SORT:
            out.append(("sort", self.sort))
        return out

    def url(self, **changes: str) -> str:
        """``?...`` for this view with some parameters replaced (``sort``, ``page``)."""
        params = [(k, v) for k, v in self.params() if k not in changes]
        params += [(k, v) for k, v in changes.items() if v]
        return "?" + urlencode(params) if params else "?"


def _number_text(value: float) -> str:
    return repr(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def table_query(params: QueryDict) -> TableQuery:
    query = TableQuery()
    errors = query.errors

    sort = params.get("sort", "").strip()
    if sort:
        column = COLUMN_BY_KEY.get(sort.lstrip("-"))
        if column is None or not column.order_by or sort.startswith("--"):
            errors["sort"] = [str(_("Sort by one of the table's columns."))]
        else:
            query.sort = sort

    # "cols=a,b" from a link, or "cols=a&cols=b" from the page's checkboxes: the same columns.
    keys = list(
        dict.fromkeys(k.strip() for value in params.getlist("cols") for k in value.split(",") if k.strip())
    )
    if "cols" in params:
        unknown = [k for k in keys if k not in COLUMN_BY_KEY]
        if unknown or not keys:
            errors["cols"] = [str(_("Choose columns of the table."))]
        else:
            query.columns = keys

    scope = params.get("scope", "mine")
    if scope not in SCOPES:
        errors["scope"] = [str(_("Give mine or students."))]
    else:
        query.scope = scope

    design = params.get("design", "").strip()
    if design:
        if design.isdigit() and int(design) < 2**63:
            query.design = int(design)
        else:
            errors["design"] = [str(_("Give an id: a whole number."))]

    query.dataset = params.get("dataset", "").strip()[:64]

    statuses = [s for value in params.getlist("status") for s in value.split(",") if s]
    if any(s not in Run.Status.values for s in statuses):
        errors["status"] = [str(_("Give statuses of runs: queued, running, succeeded, failed, cancelled."))]
    else:
        query.statuses = list(dict.fromkeys(statuses))

    query.tag = params.get("tag", "").strip().lower()[:32]

    archived = params.get("archived", "")
    if archived not in ARCHIVED:
        errors["archived"] = [str(_("Give false, true or all."))]
    else:
        query.archived = ARCHIVED[archived]

    for key in params:
        if not key.startswith("hp."):
            continue
        name, _dot, bound = key[3:].partition(".")
        column = HYPERPARAMETER_BY_NAME.get(name)
        value = params.get(key, "").strip()
        if column is None or bound not in ("", "min", "max"):
            errors[key] = [str(_("No such hyperparameter filter."))]
            continue
        if not value:
            continue  # an empty field of the filter form
        if column.kind == "choice":
            if bound:
                errors[key] = [str(_("This hyperparameter is a choice: give its value."))]
            else:
                query.choices[name] = value[:64]
            continue
        number = _number(value)
        if number is None or not bound:
            errors[key] = [str(_("Give a number, such as 0.001."))]
            continue
        low, high = query.ranges.get(name, (None, None))
        query.ranges[name] = (number, high) if bound == "min" else (low, number)
    return query


def teaches(user: User) -> bool:
    return Membership.objects.filter(user=user, role=Membership.Role.INSTRUCTOR).exists()


def scope_runs(*, user: User, scope: str) -> QuerySet[Run]:
    """Every run of the scope, archived ones too, nothing joined: what the filter form's choices
    (designs, datasets) are read from."""
    if scope == "students":
        return Run.objects.filter(owner_id__in=student_ids_of(user))
    return Run.objects.filter(owner=user)


def filter_choices(*, user: User, scope: str) -> tuple[list[tuple[int, str]], list[str]]:
    """The filter form's choices: the designs (id, name) and the datasets of the scope's runs, at most 200
    of each. The designs come through the runs' versions' ids (a semi-join on one narrow column), not a
    DISTINCT over every run joined to its version and design."""
    runs = scope_runs(user=user, scope=scope).order_by()
    versions = DesignVersion.objects.filter(pk__in=runs.values("design_version_id")).values("design_id")
    designs = list(
        Design.objects.filter(pk__in=versions).order_by("name", "pk").values_list("pk", "name")[:200]
    )
    datasets = list(runs.values_list("dataset", flat=True).distinct().order_by("dataset")[:200])
    return designs, datasets


def table_runs(*, user: User, query: TableQuery) -> QuerySet[Run]:
    """The runs ``query`` asks for that ``user`` may see, filtered and sorted in SQL, with what a row
    shows (design, owner, best and test accuracy, tags) in the same query or one prefetch.

    ``scope`` "students" is the runs of the students of the courses ``user`` teaches (callers check
    ``teaches`` first and answer 404 otherwise); "mine" is the user's own runs."""
    runs = scope_runs(user=user, scope=query.scope)
    # A row shows the design's name and the version's number: its spec, report and description (the
    # largest columns of the join) stay in the database.
    runs = (
        runs.select_related("design_version__design", "owner")
        .defer(
            "design_version__spec",
            "design_version__report",
            "design_version__applied_suggestion",
            "design_version__design__description",
        )
        .prefetch_related(Prefetch("tags", queryset=RunTag.objects.order_by("name")))
    )
    if query.archived == "hide":
        runs = runs.filter(archived_at__isnull=True)
    elif query.archived == "only":
        runs = runs.filter(archived_at__isnull=False)
    if query.design is not None:
        runs = runs.filter(design_version__design_id=query.design)
    if query.dataset:
        runs = runs.filter(dataset__iexact=query.dataset)
    if query.statuses:
        runs = runs.filter(status__in=query.statuses)
    if query.tag:
        runs = runs.filter(tags__name=query.tag)  # (run, name) is unique: no duplicate rows

    annotations: dict[str, Any] = {"test_accuracy": F("measured_accuracy")}  # a stored column
    wanted = set(query.ranges)
    sort_column = COLUMN_BY_KEY[query.sort_key]
    if sort_column.hyperparameter:
        wanted.add(sort_column.hyperparameter)
    for name in wanted.difference(Run.STORED_HYPERPARAMETERS):  # the others are columns: hp_<name>
        annotations[f"hp_{name}"] = hyperparameter_expression(HYPERPARAMETER_BY_NAME[name])
    runs = runs.annotate(**annotations)
    for name, (low, high) in query.ranges.items():
        if low is not None:
            runs = runs.filter(**{f"hp_{name}__gte": low})
        if high is not None:
            runs = runs.filter(**{f"hp_{name}__lte": high})
    for name, value in query.choices.items():
        # A JSON key's own lookup (``name`` is one of the catalog's, never the client's text): it
        # compares JSON with JSON on both databases.
        runs = runs.filter(**{f"hyperparameters__{name}": value})

    order = F(sort_column.order_by)
    # Runs without the value (no test result yet, a hyperparameter another task has) go last either
    # way; the id breaks ties, so pages never repeat or skip a run. A column that is never null sorts
    # plainly, so that an index on it (owner, -created_at) serves the page.
    if sort_column.key in NOT_NULL_SORTS:
        ordering = order.desc() if query.descending else order.asc()
    else:
        ordering = order.desc(nulls_last=True) if query.descending else order.asc(nulls_last=True)
    tie = F("pk").desc() if query.descending else F("pk").asc()
    return runs.order_by(ordering, tie)


class TablePaginator(Paginator):
    """Pages of ``table_runs``, in one statement of two steps: the page's ids are picked from the runs'
    narrow rows (the filters and the sort key only, an index where there is one), then only those 50
    runs are read whole, joined and annotated, and sorted again. Joining and carrying the wide rows of
    every run through the sort, to keep 50 of them, was most of a page's time at 10,000 runs."""

    def __init__(self, runs: QuerySet[Run], per_page: int) -> None:
        super().__init__(runs, per_page)
        self.runs = runs

    def page(self, number: int | float | str) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        return Page(self.runs.filter(pk__in=self.runs.values("pk")[bottom:top]), number, self)


def hyperparameter_value(run: Run, column: Column) -> object:
    return (run.hyperparameters or {}).get(column.hyperparameter)


def range_text(query: TableQuery, name: str, index: int) -> str:
    """The filter form's value for one end of a hyperparameter's range ("" when open)."""
    value = query.ranges.get(name, (None, None))[index]
    return "" if value is None else _number_text(value)


def sort_link(query: TableQuery, column: Column) -> dict[str, str]:
    """A header's link: ascending first, descending when it already sorts ascending by this column;
    ``aria`` is the header's aria-sort."""
    if not column.order_by:
        return {"url": "", "aria": ""}
    active = query.sort_key == column.key
    target = f"-{column.key}" if active and not query.descending else column.key
    aria = ("descending" if query.descending else "ascending") if active else ""
    return {"url": query.url(sort=target), "aria": aria}


class RowsHtml:
    """The table's rows as HTML, written here rather than by the template language: 50 rows of a dozen
    cells, each with its tags-and-note form and its archive and delete links, were most of a page's
    time in template nodes. Every value goes through ``esc`` (what the template's autoescape does:
    ``html.escape``; f-strings rather than ``format_html``, whose lazy wrapping cost as much again); the
    texts are the catalogue's (the same msgids the template used, trusted markup), looked up once."""

    def __init__(self, *, columns: list[Column], editable: bool, here: str, csrf_input: str, tag_base: str):
        self.columns = columns
        self.editable = editable
        self.here = esc(here)
        self.csrf_input = csrf_input  # django.template.backends.utils.csrf_input: {% csrf_token %}'s HTML
        self.tag_base = esc(tag_base)
        self.compare_label = gettext("Compare run %(id)s")
        self.label_summary = gettext('Tags and note<span class="visually-hidden"> of run %(id)s</span>')
        self.archive = gettext("Archive")
        self.unarchive = gettext("Unarchive")
        self.delete = gettext("Delete")
        self.archived = gettext("archived")
        self.label_texts = label_form_texts()
        # What get_status_display() and reverse() give each row, looked up once for the page: per row
        # they were a tenth of its time (the lazy choices are hashed and translated at every call).
        self.status_labels = {value: str(label) for value, label in Run.Status.choices}
        self.detail_url = run_url("run-detail")
        self.archive_url = run_url("run-archive")
        self.delete_url = run_url("run-delete")
        self.label_url = run_url("run-label")

    def row(self, run: Run) -> SafeString:
        pk = run.pk
        parts = [
            f'<tr data-run="{pk}"><td><input type="checkbox" name="ids" value="{pk}" form="compare-form" '
            f'class="compare-pick" aria-label="{esc(self.compare_label % {"id": pk})}"></td>'
        ]
        parts.extend(self.cell(run, c) for c in self.columns)
        if self.editable:
            parts.append(
                '<td class="row-actions"><details class="label-edit">'
                f"<summary>{self.label_summary % {'id': pk}}</summary>"
                f"{label_form_html(run, next_url=self.here, csrf_input=self.csrf_input, texts=self.label_texts, escaped=True, action=self.label_url(pk))}"
                "</details>"
            )
            if run.can_delete:
                archived = bool(run.archived_at)
                parts.append(
                    f'<form method="post" action="{self.archive_url(pk)}" class="inline-form">'
                    f"{self.csrf_input}"
                    f'<input type="hidden" name="archive" value="{"0" if archived else "1"}">'
                    f'<input type="hidden" name="next" value="{self.here}">'
                    f'<button type="submit" class="link-button">{self.unarchive if archived else self.archive}'
                    f'<span class="visually-hidden"> #{pk}</span></button></form>'
                    f'<a href="{self.delete_url(pk)}" class="danger-link">{self.delete}'
                    f'<span class="visually-hidden"> #{pk}</span></a>'
                )
            parts.append("</td>")
        parts.append("</tr>")
        return mark_safe("".join(parts))  # noqa: S308 - every value above went through esc()

    def cell(self, run: Run, column: Column) -> str:
        key = column.key
        if key == "id":
            return f'<td data-column="id"><a href="{self.detail_url(run.pk)}">#{run.pk}</a></td>'
        if key == "status":
            return (
                f'<td data-column="status"><span class="status status-{esc(run.status)}" data-status>'
                f"{esc(self.status_labels.get(run.status, run.status))}</span></td>"
            )
        if key == "tags":
            tags = run.tags.all()
            if not tags:
                return '<td data-column="tags"><span class="muted">—</span></td>'
            links = "".join(
                f'<a class="tag" href="{self.tag_base}&amp;tag={esc(quote(t.name, safe="/"))}">{esc(t.name)}</a> '
                for t in tags
            )
            return f'<td data-column="tags">{links}</td>'
        return f'<td data-column="{key}">{esc(self.text(run, column))}</td>'

    def text(self, run: Run, column: Column) -> str:
        key = column.key
        if column.hyperparameter:
            return plain(hyperparameter_value(run, column))
        version = run.design_version
        if key == "owner":
            return run.owner.display_name
        if key == "design":
            return version.design.name + (f" ({self.archived})" if run.archived_at else "")
        if key == "version":
            return f"v{version.number}"
        if key == "dataset":
            return run.dataset
        if key == "epochs":
            return f"{run.epoch}/{run.epochs}"
        if key == "best":
            return percent(run.best_val_acc)
        if key == "test":
            return percent(getattr(run, "test_accuracy", None))
        if key == "duration":
            return f"{run.run_seconds:.0f} s" if run.run_seconds else NONE
        if key == "device":
            return run.device or NONE
        if key == "created":
            return date_format(localtime(run.created_at), "Y-m-d H:i")
        return Truncator(run.note).chars(80) or NONE  # note


def run_url(name: str) -> Callable[[int], str]:
    """``reverse(name, args=[pk])`` for many runs: the URL is reversed once and each run's id put in its
    place (a run's URLs hold the id once, as ``<int:pk>``)."""
    head, _marker, tail = reverse(name, args=[RUN_URL_MARKER]).rpartition(str(RUN_URL_MARKER))
    return lambda pk: f"{head}{int(pk)}{tail}"


RUN_URL_MARKER = 918273645546372819  # an id no prefix of a URL holds


def esc(value: object) -> str:
    """``value`` as the template language writes a variable: ``str()`` then HTML-escaped."""
    return html.escape(str(value))


def label_form_texts() -> dict[str, str]:
    """The tags-and-note form's words in the active language (the catalogue's, trusted markup)."""
    return {
        "tags": gettext("Tags"),
        "help": gettext("Words separated by commas, such as baseline, dropout."),
        "note": gettext("Note"),
        "save": gettext("Save tags and note"),
    }


def label_form_html(
    run: Run,
    *,
    next_url: str,
    csrf_input: str,
    texts: dict[str, str] | None = None,
    escaped: bool = False,
    action: str = "",
) -> SafeString:
    """The owner's form for a run's tags and note (the runs table's rows and the run page); ``next_url``
    already escaped when ``escaped``; ``action`` the run's label URL when the caller has it."""
    texts = texts or label_form_texts()
    pk = run.pk
    action = action or reverse("run-label", args=[pk])
    tags = esc(", ".join(t.name for t in run.tags.all()))
    return mark_safe(  # noqa: S308 - every value goes through esc(); the texts are the catalogue's
        f'<form method="post" action="{action}" class="label-form">{csrf_input}'
        f'<input type="hidden" name="next" value="{next_url if escaped else esc(next_url)}">'
        f'<label for="tags-{pk}">{texts["tags"]}</label>'
        f'<input type="text" name="tags" id="tags-{pk}" value="{tags}" aria-describedby="tags-help-{pk}">'
        f'<small id="tags-help-{pk}" class="muted">{texts["help"]}</small>'
        f'<label for="note-{pk}">{texts["note"]}</label>'
        f'<textarea name="note" id="note-{pk}" rows="2" maxlength="2000">{esc(run.note)}</textarea>'
        f'<button type="submit" class="button">{texts["save"]}</button></form>'
    )
