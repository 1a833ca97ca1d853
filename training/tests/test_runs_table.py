"""The runs table (issue 17): one view of a user's runs for the page /runs/ and GET /api/v1/runs/,
sorted and filtered on the server (hyperparameters too), tags and a note, an instructor's students'
runs, and N runs compared."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import services as account_services
from buildx.test import make_user
from training.models import EpochMetric, Run, RunTag
from training.services.events import events_append, run_best_refresh
from training.tests.conftest import make_design


def add_run(
    owner,
    design,
    *,
    lr: float = 0.01,
    batch_size: int = 32,
    optimizer: str = "adam",
    accuracy: float | None = None,
    status: str = Run.Status.SUCCEEDED,
    dataset: str = "digits",
    val_acc: tuple[float, ...] = (),
    tags: tuple[str, ...] = (),
) -> Run:
    """A run as a worker leaves it (hyperparameters, status, the measured test result, epoch metrics)."""
    version, artifact = design
    run = Run.objects.create(
        owner=owner,
        design_version=version,
        code_artifact=artifact,
        dataset=dataset,
        hyperparameters={
            **version.spec["hyperparameters"],
            "learning_rate": lr,
            "batch_size": batch_size,
            "optimizer": optimizer,
        },
        status=status,
        epochs=max(len(val_acc), 1),
        epoch=len(val_acc),
        metrics={} if accuracy is None else {"accuracy": accuracy},
        metrics_source="platform" if accuracy is not None else "",
        run_seconds=12.5,
        device="cpu",
    )
    EpochMetric.objects.bulk_create(
        EpochMetric(run=run, epoch=i, val_acc=v, val_loss=1 - v, train_loss=1 - v, train_acc=v)
        for i, v in enumerate(val_acc, start=1)
    )
    run_best_refresh(run_id=run.pk)  # as events_append keeps it when it stores epochs
    RunTag.objects.bulk_create(RunTag(run=run, name=t) for t in tags)
    run.refresh_from_db()
    return run


@pytest.fixture
def design(alice):
    return make_design(alice)


def ids_of(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [r["id"] for r in response.json()["results"]]


def queries_of(client, url: str) -> int:
    """The queries one GET of ``url`` costs (it must answer 200)."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def page_ids(response) -> list[int]:
    assert response.status_code == 200
    return [int(i) for i in re.findall(r'<tr data-run="(\d+)"', response.content.decode())]


def test_the_api_and_the_page_sort_by_a_hyperparameter_and_by_the_test_accuracy(alice, alice_client, design):
    low = add_run(alice, design, lr=0.001, accuracy=0.80)
    high = add_run(alice, design, lr=0.5, accuracy=0.60)
    middle = add_run(alice, design, lr=0.05, accuracy=0.95)
    unfinished = add_run(alice, design, lr=0.01, status=Run.Status.FAILED)

    assert ids_of(alice_client.get("/api/v1/runs/?sort=hp.learning_rate")) == [
        low.pk,
        unfinished.pk,
        middle.pk,
        high.pk,
    ]
    assert ids_of(alice_client.get("/api/v1/runs/?sort=-hp.learning_rate")) == [
        high.pk,
        middle.pk,
        unfinished.pk,
        low.pk,
    ]
    # A run without a test result goes last either way.
    assert ids_of(alice_client.get("/api/v1/runs/?sort=-test")) == [middle.pk, low.pk, high.pk, unfinished.pk]
    assert ids_of(alice_client.get("/api/v1/runs/?sort=test")) == [high.pk, low.pk, middle.pk, unfinished.pk]
    assert page_ids(alice_client.get("/runs/?sort=-hp.learning_rate")) == [
        high.pk,
        middle.pk,
        unfinished.pk,
        low.pk,
    ]
    row = alice_client.get("/api/v1/runs/?sort=-test").json()["results"][0]
    assert row["test_accuracy"] == 0.95 and row["hyperparameters"]["learning_rate"] == 0.05


def test_the_best_validation_accuracy_is_the_best_epoch_and_sorts(alice, alice_client, design):
    steady = add_run(alice, design, val_acc=(0.5, 0.7, 0.6))
    best = add_run(alice, design, val_acc=(0.9, 0.4))
    none = add_run(alice, design)
    rows = alice_client.get("/api/v1/runs/?sort=-best").json()["results"]
    assert [(r["id"], r["best_val_acc"]) for r in rows] == [(best.pk, 0.9), (steady.pk, 0.7), (none.pk, None)]
    assert '<td data-column="best">70.0%</td>' in alice_client.get("/runs/").content.decode()


def test_the_best_validation_accuracy_follows_the_epochs_a_worker_stores_and_a_resume_drops(
    alice, alice_client, design
):
    run = add_run(alice, design, status=Run.Status.RUNNING)

    def best() -> float | None:
        return alice_client.get(f"/api/v1/runs/{run.pk}/").json()["best_val_acc"]

    def epoch(n: int, val_acc: float | None) -> dict:
        return {"epoch": n, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": val_acc}

    assert best() is None
    events_append(run_id=run.pk, events=[], epoch_metrics=[epoch(1, 0.5), epoch(2, 0.8)])
    assert best() == 0.8
    events_append(run_id=run.pk, events=[], epoch_metrics=[epoch(3, 0.6)])
    assert best() == 0.8
    # Epoch 2 trained again (after a resume) with a worse result: the best is what is stored now.
    events_append(run_id=run.pk, events=[], epoch_metrics=[epoch(2, 0.55)])
    assert best() == 0.6
    # A resume from the checkpoint of epoch 1 drops the later epochs (training.services.execution).
    EpochMetric.objects.filter(run=run, epoch__gt=1).delete()
    run_best_refresh(run_id=run.pk)
    assert best() == 0.5
    assert page_ids(alice_client.get("/runs/?sort=-best")) == [run.pk]
    assert '<td data-column="best">50.0%</td>' in alice_client.get("/runs/").content.decode()


def test_the_table_filters_by_a_learning_rate_range_a_tag_a_status_and_a_dataset(alice, alice_client, design):
    small = add_run(alice, design, lr=0.0005, tags=("baseline",))
    inside = add_run(alice, design, lr=0.001, tags=("baseline", "dropout"))
    inside_too = add_run(alice, design, lr=0.1, status=Run.Status.FAILED)
    large = add_run(alice, design, lr=0.5, tags=("dropout",), dataset="shapes")

    between = "hp.learning_rate.min=0.001&hp.learning_rate.max=0.1"
    assert set(ids_of(alice_client.get(f"/api/v1/runs/?{between}"))) == {inside.pk, inside_too.pk}
    assert page_ids(alice_client.get(f"/runs/?{between}&sort=hp.learning_rate")) == [inside.pk, inside_too.pk]
    assert set(ids_of(alice_client.get("/api/v1/runs/?tag=baseline"))) == {small.pk, inside.pk}
    assert ids_of(alice_client.get(f"/api/v1/runs/?tag=dropout&{between}")) == [inside.pk]
    assert ids_of(alice_client.get("/api/v1/runs/?status=failed")) == [inside_too.pk]
    assert ids_of(alice_client.get("/api/v1/runs/?dataset=shapes")) == [large.pk]
    assert ids_of(alice_client.get("/api/v1/runs/?hp.optimizer=sgd")) == []
    assert len(ids_of(alice_client.get("/api/v1/runs/?hp.optimizer=adam"))) == 4
    assert ids_of(
        alice_client.get(f"/api/v1/runs/?design={design[0].design_id}&hp.learning_rate.min=0.2")
    ) == [large.pk]


def test_the_page_keeps_the_view_in_its_links_and_its_form(alice, alice_client, design):
    add_run(alice, design, lr=0.001, tags=("baseline",))
    page = alice_client.get(
        "/runs/?hp.learning_rate.min=0.001&tag=baseline&sort=-hp.learning_rate&cols=id,hp.learning_rate,test"
    ).content.decode()
    # The form holds the filters and the columns; the headers sort within the same filters.
    assert 'name="hp.learning_rate.min" id="filter-learning_rate-min" value="0.001"' in page
    assert 'id="filter-tag" value="baseline"' in page
    assert 'name="cols" value="hp.learning_rate" checked' in page and 'name="cols" value="design">' in page
    assert 'aria-sort="descending"' in page
    link = re.search(
        r'<th scope="col" data-column="hp.learning_rate" aria-sort="descending">\s*<a href="([^"]+)"', page
    )
    assert link is not None
    href = link.group(1).replace("&amp;", "&")
    assert "sort=hp.learning_rate" in href and "tag=baseline" in href and "hp.learning_rate.min=0.001" in href
    assert "cols=id%2Chp.learning_rate%2Ctest" in href
    # Only the chosen columns are drawn.
    headers = re.findall(r'<th scope="col" data-column="([^"]+)"', page)
    assert headers == ["id", "hp.learning_rate", "test"]


def test_a_page_holds_50_runs_and_the_next_link_gives_the_rest(alice, alice_client, design):
    runs = [add_run(alice, design, lr=0.001 * (i + 1)) for i in range(53)]
    first = alice_client.get("/runs/?sort=hp.learning_rate")
    assert page_ids(first) == [r.pk for r in runs[:50]]
    assert "53 runs" in first.content.decode()
    assert page_ids(alice_client.get("/runs/?sort=hp.learning_rate&page=2")) == [r.pk for r in runs[50:]]
    api = alice_client.get("/api/v1/runs/?sort=hp.learning_rate&page=2").json()
    assert api["count"] == 53 and [r["id"] for r in api["results"]] == [r.pk for r in runs[50:]]


def test_a_page_of_the_table_costs_the_same_queries_for_5_and_50_runs(alice, alice_client, design):
    urls = [
        "/runs/?sort=-hp.learning_rate&tag=t&cols=id,design,hp.learning_rate,best,test,tags,note",
        "/api/v1/runs/?sort=-best&tag=t&hp.learning_rate.min=0",
    ]
    for i in range(5):
        add_run(alice, design, lr=0.001 * (i + 1), val_acc=(0.5, 0.6), tags=("t", f"x{i}"))
    few = [queries_of(alice_client, url) for url in urls]
    for i in range(45):
        add_run(alice, design, lr=0.01 * (i + 1), val_acc=(0.5, 0.6), tags=("t", f"y{i}"))
    many = [queries_of(alice_client, url) for url in urls]
    assert page_ids(alice_client.get(urls[0])).__len__() == 50
    assert few == many


def test_tags_and_a_note_sent_as_a_form_are_refused_and_change_nothing(alice, alice_client, design):
    """The API speaks JSON here: a form's `tags=639` would read as the list ["639"] (the API fuzz found it)."""
    run = add_run(alice, design)
    from django.test.client import MULTIPART_CONTENT, encode_multipart

    boundary = "b0undary"
    answer = alice_client.patch(
        f"/api/v1/runs/{run.pk}/",
        encode_multipart(boundary, {"tags": "639", "note": "-81333"}),
        content_type=f"{MULTIPART_CONTENT[: MULTIPART_CONTENT.index('boundary=')]}boundary={boundary}",
    )
    assert answer.status_code == 415, answer.content
    run.refresh_from_db()
    assert run.note == "" and not RunTag.objects.filter(run=run).exists()
    # Positive control: the same values as JSON are read as what they are (a tag must be a list).
    answer = alice_client.patch(
        f"/api/v1/runs/{run.pk}/", {"tags": "639", "note": "-81333"}, content_type="application/json"
    )
    assert answer.status_code == 400 and "tags" in answer.json()["error"]["fields"]


def test_the_owner_sets_tags_and_a_note_and_nobody_else_can(alice, alice_client, bob, carol, client, design):
    account_services.course_join(
        user=alice,
        code=account_services.course_create(name="DL", term="Spring", instructors=[carol]).join_code,
    )
    run = add_run(alice, design)
    answer = alice_client.patch(
        f"/api/v1/runs/{run.pk}/",
        {"tags": ["Baseline", "dropout", "baseline", "학습률"], "note": "lr too high?"},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    assert (
        answer.json()["tags"] == ["baseline", "dropout", "학습률"] and answer.json()["note"] == "lr too high?"
    )
    assert sorted(RunTag.objects.filter(run=run).values_list("name", flat=True)) == [
        "baseline",
        "dropout",
        "학습률",
    ]

    # Only the note: the tags stay.
    alice_client.patch(f"/api/v1/runs/{run.pk}/", {"note": ""}, content_type="application/json")
    run.refresh_from_db()
    assert run.note == "" and RunTag.objects.filter(run=run).count() == 3

    bad = alice_client.patch(
        f"/api/v1/runs/{run.pk}/", {"tags": ["two words"]}, content_type="application/json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["tags"]
    long = alice_client.patch(
        f"/api/v1/runs/{run.pk}/", {"note": "x" * 2001}, content_type="application/json"
    )
    assert long.status_code == 400
    assert RunTag.objects.filter(run=run).count() == 3

    for user in (bob, carol):  # another student, and alice's instructor (who may only look)
        client.force_login(user)
        refused = client.patch(
            f"/api/v1/runs/{run.pk}/", {"tags": ["hacked"]}, content_type="application/json"
        )
        assert refused.status_code == 404
        assert client.post(f"/runs/{run.pk}/label/", {"tags": "hacked", "note": "x"}).status_code == 404
    assert not RunTag.objects.filter(name="hacked").exists()

    # The page's form: back to the table view it came from; the table shows the tags.
    client.force_login(alice)
    back = "/runs/?sort=hp.learning_rate"
    answer = client.post(
        f"/runs/{run.pk}/label/", {"tags": "keep, this", "note": "<b>mine</b>", "next": back}
    )
    assert answer.status_code == 302 and answer["Location"] == back
    page = client.get(back).content.decode()
    assert ">keep</a>" in page and ">this</a>" in page and "&lt;b&gt;mine&lt;/b&gt;" in page
    # A next that leaves the site is not followed.
    answer = client.post(f"/runs/{run.pk}/label/", {"tags": "", "next": "https://evil.example/runs/"})
    assert answer["Location"] == f"/runs/{run.pk}/"


def test_archive_from_the_table_returns_to_the_same_view(alice, alice_client, design):
    run = add_run(alice, design)
    back = "/runs/?sort=-test"
    answer = alice_client.post(f"/runs/{run.pk}/archive/", {"archive": "1", "next": back})
    assert answer["Location"] == back
    run.refresh_from_db()
    assert run.archived_at is not None
    assert page_ids(alice_client.get(back)) == []
    assert page_ids(alice_client.get("/runs/?archived=1")) == [run.pk]
    assert f'href="/runs/{run.pk}/delete/"' in alice_client.get("/runs/?archived=1").content.decode()


def test_an_instructor_sees_the_table_over_their_students_only(alice, bob, carol, dave, client, design):
    account_services.course_join(
        user=alice,
        code=account_services.course_create(name="DL", term="Spring", instructors=[carol]).join_code,
    )
    account_services.course_join(
        user=bob,
        code=account_services.course_create(name="Vision", term="Spring", instructors=[dave]).join_code,
    )
    alices = add_run(alice, design, lr=0.1)
    bobs = add_run(bob, make_design(bob), lr=0.2)
    carols_own = add_run(carol, make_design(carol), lr=0.3)

    client.force_login(carol)
    assert ids_of(client.get("/api/v1/runs/?scope=students")) == [alices.pk]
    page = client.get("/runs/?scope=students&cols=id,owner,hp.learning_rate")
    assert page_ids(page) == [alices.pk] and "Alice" in page.content.decode()
    assert "/label/" not in page.content.decode() and "/archive/" not in page.content.decode()  # looking only
    assert ids_of(client.get("/api/v1/runs/")) == [carols_own.pk]  # her own table stays hers
    client.force_login(dave)
    assert ids_of(client.get("/api/v1/runs/?scope=students")) == [bobs.pk]
    client.force_login(alice)  # a student teaches nothing: no students' table
    assert client.get("/api/v1/runs/?scope=students").status_code == 404
    assert client.get("/runs/?scope=students").status_code == 404


def test_four_runs_are_compared_with_the_differences_marked_and_a_parallel_plot(
    alice, alice_client, design, bob
):
    runs = [
        add_run(alice, design, lr=lr, batch_size=bs, accuracy=acc, val_acc=(0.3, 0.5))
        for lr, bs, acc in ((0.01, 32, 0.9), (0.1, 32, 0.8), (0.001, 64, 0.7), (0.01, 32, None))
    ]
    ids = ",".join(str(r.pk) for r in runs)
    page = alice_client.get(f"/runs/compare/?ids={ids}").content.decode()
    rows = dict(re.findall(r'<tr class="differs" data-hyperparameter="(\w+)">(.*?)</tr>', page))
    assert set(rows) == {"learning_rate", "batch_size"}
    # learning_rate: 0.01 (first), 0.1 and 0.001 differ from it, the fourth's 0.01 does not.
    cells = re.findall(r"<td( class=\"cell-differs\")?>(.*?)</td>", rows["learning_rate"])
    assert [(bool(marked), value.rsplit(" ", 1)[-1].split(">")[-1]) for marked, value in cells] == [
        (False, "0.01"),
        (True, "0.1"),
        (True, "0.001"),
        (False, "0.01"),
    ]
    assert rows["learning_rate"].count("≠") == 3  # the row's marker and two cells'
    assert 'data-hyperparameter="optimizer"><th' in page  # same everywhere: not marked
    # Parallel coordinates: an axis per differing hyperparameter and the test accuracy, a line per run;
    # the run without a test result stops before the last axis.
    axes = re.findall(r'<g class="parallel-axis" data-axis="([^"]+)"', page)
    assert axes == ["batch_size", "learning_rate", "test accuracy"] or axes == [
        "learning_rate",
        "batch_size",
        "test accuracy",
    ]
    lines = dict(
        re.findall(r'<polyline points="([^"]*)" class="series series-\d" data-run="(\d+)"', page)[i][::-1]
        for i in range(4)
    )
    assert [len(lines[str(r.pk)].split()) for r in runs] == [3, 3, 3, 2]
    series = re.search(r'<script id="compare-series" type="application/json">(.*?)</script>', page)
    assert series is not None and series.group(1).count('"epochs"') == 4

    # Repeated ids (the table's checkboxes) are the same as a list; someone else's run is a 404.
    assert alice_client.get("/runs/compare/?" + "&".join(f"ids={r.pk}" for r in runs)).status_code == 200
    others = add_run(bob, make_design(bob))
    assert alice_client.get(f"/runs/compare/?ids={ids},{others.pk}").status_code == 404


def test_a_query_the_table_does_not_understand_is_a_400_in_the_api_and_a_notice_on_the_page(
    alice, alice_client, design
):
    run = add_run(alice, design)
    for query in (
        "sort=hp.nope",
        "sort=password",
        "hp.learning_rate.min=abc",
        "hp.learning_rate.min=nan",
        "hp.x')--.min=1",
        "status=bogus",
        "archived=maybe",
        "cols=id,secret",
        "design=1e9",
    ):
        answer = alice_client.get(f"/api/v1/runs/?{query}")
        assert answer.status_code == 400, query
        assert answer.json()["error"]["code"] == "invalid"
        page = alice_client.get(f"/runs/?{query}")
        assert page.status_code == 200 and 'id="table-errors"' in page.content.decode(), query
        assert page_ids(page) == [run.pk], query  # the rest of the view still shows


def test_the_table_and_its_answers_speak_korean(alice, alice_client, design):
    run = add_run(alice, design, accuracy=0.9, val_acc=(0.5,))
    page = alice_client.get("/runs/?sort=-best", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "최고 검증 정확도" in page and "태그와 메모" in page and "실행 1개" in page
    refused = alice_client.patch(
        f"/api/v1/runs/{run.pk}/",
        {"tags": ["a b"]},
        content_type="application/json",
        HTTP_ACCEPT_LANGUAGE="ko",
    )
    assert "태그는 한 단어입니다" in refused.json()["error"]["fields"]["tags"][0]
    bad = alice_client.get("/api/v1/runs/?hp.learning_rate.min=x", HTTP_ACCEPT_LANGUAGE="ko")
    assert bad.json()["error"]["fields"]["hp.learning_rate.min"] == ["0.001 같은 숫자를 주세요."]
    compare = alice_client.get(
        f"/runs/compare/?ids={run.pk},{add_run(alice, design, lr=0.5).pk}", HTTP_ACCEPT_LANGUAGE="ko"
    ).content.decode()
    assert "하이퍼파라미터와 테스트 정확도" in compare and "첫 번째 실행과 다름" in compare


def test_the_run_page_shows_the_tags_and_note_and_offers_the_form_to_the_owner_only(
    alice, alice_client, carol, client, design
):
    account_services.course_join(
        user=alice,
        code=account_services.course_create(name="DL", term="Spring", instructors=[carol]).join_code,
    )
    run = add_run(alice, design, tags=("baseline",))
    alice_client.post(f"/runs/{run.pk}/label/", {"tags": "baseline, wide", "note": "try less dropout"})
    page = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'href="/runs/?tag=wide"' in page and "try less dropout" in page and 'id="label-edit"' in page
    # Every id once: run-live.js reads its labels from the element with the id "run-labels".
    ids = re.findall(r' id="([^"]+)"', page)
    assert sorted(ids) == sorted(set(ids))
    client.force_login(carol)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "try less dropout" in page and 'id="label-edit"' not in page


def carols_students_table(alice, bob, carol, dave, design) -> dict[str, Run]:
    """alice and bob in carol's course, each with runs whose learning rates fall inside 0.001..0.1, on
    its ends, outside it, or are no number at all (text, a boolean, missing); dave's student's run and
    an archived one, which carol's default view leaves out."""
    account_services.course_join(
        user=alice, code=account_services.course_create(name="DL", instructors=[carol]).join_code
    )
    account_services.course_join(
        user=bob, code=account_services.course_create(name="DL 2", instructors=[carol]).join_code
    )
    others = make_user("erin@example.com", first_name="Erin")
    account_services.course_join(
        user=others, code=account_services.course_create(name="CV", instructors=[dave]).join_code
    )
    bobs = make_design(bob)
    runs = {
        "low end": add_run(alice, design, lr=0.001, accuracy=0.7),
        "high end": add_run(alice, design, lr=0.1, accuracy=0.9),
        "bob inside": add_run(bob, bobs, lr=0.01, accuracy=0.8),
        "bob untested": add_run(bob, bobs, lr=0.05, status=Run.Status.FAILED),
        "below": add_run(alice, design, lr=0.0009, accuracy=0.99),
        "above": add_run(alice, design, lr=0.2, accuracy=0.95),
        "text": add_run(alice, design, accuracy=0.97),
        "boolean": add_run(alice, design, accuracy=0.96),
        "missing": add_run(alice, design, accuracy=0.94),
        "archived": add_run(alice, design, lr=0.01, accuracy=0.85),
        "bob tie": add_run(bob, bobs, lr=0.02, accuracy=0.8),
        "another course": add_run(others, make_design(others), lr=0.01, accuracy=0.98),
    }
    # Written after the runs were made, as a worker or an older version of the platform may have left
    # them: the table reads what is stored now.
    for name, value in (("text", "0.01"), ("boolean", True)):
        run = runs[name]
        Run.objects.filter(pk=run.pk).update(hyperparameters={**run.hyperparameters, "learning_rate": value})
    run = runs["missing"]
    Run.objects.filter(pk=run.pk).update(
        hyperparameters={k: v for k, v in run.hyperparameters.items() if k != "learning_rate"}
    )
    Run.objects.filter(pk=runs["archived"].pk).update(archived_at=timezone.now())
    return runs


def test_an_instructor_filters_the_students_runs_by_a_learning_rate_range_and_sorts_by_test_accuracy(
    alice, bob, carol, dave, client, design
):
    runs = carols_students_table(alice, bob, carol, dave, design)
    client.force_login(carol)

    def expect(*names: str) -> list[int]:
        return [runs[n].pk for n in names]

    between = "scope=students&hp.learning_rate.min=0.001&hp.learning_rate.max=0.1"
    # Both ends count; the tie at 80% goes to the newer run first; a run without a test result is last.
    best_first = expect("high end", "bob tie", "bob inside", "low end", "bob untested")
    assert ids_of(client.get(f"/api/v1/runs/?{between}&sort=-test")) == best_first
    assert page_ids(client.get(f"/runs/?{between}&sort=-test")) == best_first
    assert client.get(f"/api/v1/runs/?{between}&sort=-test").json()["count"] == 5
    worst_first = expect("low end", "bob inside", "bob tie", "high end", "bob untested")
    assert ids_of(client.get(f"/api/v1/runs/?{between}&sort=test")) == worst_first
    # Sorted by the learning rate itself: a value that is no number sorts with the missing ones, last.
    by_rate = expect("below", "low end", "bob inside", "bob tie", "bob untested", "high end", "above")
    by_rate += expect("text", "boolean", "missing")
    assert ids_of(client.get("/api/v1/runs/?scope=students&sort=hp.learning_rate")) == by_rate
    assert page_ids(client.get("/runs/?scope=students&sort=hp.learning_rate")) == by_rate
    # The row shows the stored hyperparameter as it is, text included.
    rows = client.get("/api/v1/runs/?scope=students&sort=-test").json()["results"]
    assert [r["hyperparameters"].get("learning_rate") for r in rows[:3]] == [0.0009, "0.01", True]


def test_the_instructors_filtered_table_costs_the_same_queries_for_5_and_50_runs(
    alice, bob, carol, dave, client, design
):
    carols_students_table(alice, bob, carol, dave, design)
    client.force_login(carol)
    urls = [
        "/runs/?scope=students&hp.learning_rate.min=0.001&hp.learning_rate.max=0.1&sort=-test",
        "/api/v1/runs/?scope=students&hp.learning_rate.min=0.001&hp.learning_rate.max=0.1&sort=-test",
        "/api/v1/runs/?scope=students&hp.batch_size.min=16&sort=-hp.momentum",
    ]

    few = [queries_of(client, url) for url in urls]
    for i in range(45):
        add_run(alice, design, lr=0.001 * (i + 1), accuracy=i / 50, tags=(f"t{i}",))
    many = [queries_of(client, url) for url in urls]
    assert len(page_ids(client.get(urls[0]))) == 50
    assert few == many
