"""Archiving and deleting runs, from the API and the pages: what goes, what stays, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from designs import services as design_services
from designs.models import Design
from training import services
from training.models import EpochMetric, Run, RunArtifact, RunEvent
from training.tests.conftest import make_design

pytestmark = pytest.mark.django_db


def _run(owner, *, status: str = Run.Status.SUCCEEDED, files: bool = True) -> Run:
    version, artifact = make_design(owner)
    run = services.run_create(owner=owner, version=version, artifact=artifact)
    Run.objects.filter(pk=run.pk).update(status=status, metrics={"accuracy": 0.9}, metrics_source="platform")
    EpochMetric.objects.create(run=run, epoch=1, train_loss=1.0, val_loss=1.1, train_acc=0.5, val_acc=0.4)
    if files:
        services.artifact_store(
            run=run, kind=RunArtifact.Kind.SCRIPT, filename="script.py", content=b"x = 1\n"
        )
        services.artifact_store(
            run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=b"\0" * 64
        )
    run.refresh_from_db()
    return run


def _files(run: Run) -> list[Path]:
    return [Path(a.file.path) for a in run.artifacts.all()]


def test_deleting_a_finished_run_removes_its_rows_and_its_files_in_storage(
    alice_client, alice, run_storage, django_capture_on_commit_callbacks
):
    run = _run(alice)
    files = _files(run)
    assert len(files) == 2 and all(f.exists() for f in files)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.delete(reverse("api-run", args=[run.pk]))

    assert response.status_code == 204
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not RunEvent.objects.filter(run_id=run.pk).exists()
    assert not RunArtifact.objects.filter(run_id=run.pk).exists()
    assert not any(f.exists() for f in files)
    assert not (Path(settings.MEDIA_ROOT) / "runs" / str(run.pk)).exists()  # no empty folders left


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (Run.Status.QUEUED, "still queued: stop it first"),
        (Run.Status.RUNNING, "still running: stop it first"),
        (Run.Status.INTERRUPTED, "will resume by itself: stop it first"),
    ],
)
def test_a_run_that_may_still_train_is_not_deleted_and_the_answer_says_stop_it_first(
    alice_client, alice, run_storage, status, says
):
    run = _run(alice, status=status)
    response = alice_client.delete(reverse("api-run", args=[run.pk]))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_finished"
    assert says in response.json()["error"]["message"]
    assert Run.objects.filter(pk=run.pk).exists() and all(f.exists() for f in _files(run))


def test_another_users_run_cannot_be_deleted_or_archived(alice_client, bob, run_storage):
    run = _run(bob)
    assert alice_client.delete(reverse("api-run", args=[run.pk])).status_code == 404
    assert alice_client.post(reverse("api-run-archive", args=[run.pk])).status_code == 404
    assert alice_client.post(reverse("run-delete", args=[run.pk])).status_code == 404
    assert alice_client.post(reverse("run-archive", args=[run.pk])).status_code == 404
    run.refresh_from_db()
    assert run.archived_at is None


def test_an_archived_run_leaves_the_default_lists_and_comes_back_on_unarchive(
    alice_client, alice, run_storage
):
    kept, archived = _run(alice, files=False), _run(alice, files=False)

    response = alice_client.post(reverse("api-run-archive", args=[archived.pk]))
    assert response.status_code == 200 and response.json()["archived_at"]
    archived.refresh_from_db()
    assert archived.archived_at is not None

    def api_ids(query: str = "") -> set[int]:
        return {r["id"] for r in alice_client.get(reverse("api-runs") + query).json()["results"]}

    assert api_ids() == {kept.pk}
    assert api_ids("?archived=true") == {archived.pk}
    assert api_ids("?archived=all") == {kept.pk, archived.pk}

    runs_page = alice_client.get(reverse("run-list")).content.decode()
    assert f'data-run="{archived.pk}"' not in runs_page and f'data-run="{kept.pk}"' in runs_page
    assert "Show 1 archived run" in runs_page
    archive_page = alice_client.get(reverse("run-list") + "?archived=1").content.decode()
    assert f'data-run="{archived.pk}"' in archive_page and f'data-run="{kept.pk}"' not in archive_page
    assert f'data-run="{archived.pk}"' not in alice_client.get(reverse("dashboard")).content.decode()
    assert 'id="run-archived"' in alice_client.get(reverse("run-detail", args=[archived.pk])).content.decode()

    response = alice_client.post(reverse("api-run-unarchive", args=[archived.pk]))
    assert response.status_code == 200 and response.json()["archived_at"] is None
    assert api_ids() == {kept.pk, archived.pk}


def test_a_running_run_cannot_be_archived(alice_client, alice, run_storage):
    run = _run(alice, status=Run.Status.RUNNING, files=False)
    response = alice_client.post(reverse("api-run-archive", args=[run.pk]))
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_finished"
    run.refresh_from_db()
    assert run.archived_at is None


def test_the_run_page_archives_and_deletes_after_a_confirmation(
    alice_client, alice, run_storage, django_capture_on_commit_callbacks
):
    run = _run(alice)
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert 'id="archive-button"' in page and reverse("run-delete", args=[run.pk]) in page

    response = alice_client.post(reverse("run-archive", args=[run.pk]), {"archive": "1"})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.archived_at is not None
    assert 'id="unarchive-button"' in alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    alice_client.post(reverse("run-archive", args=[run.pk]), {"archive": "0"})
    run.refresh_from_db()
    assert run.archived_at is None

    # Deleting asks first: the GET only shows what would go.
    confirm = alice_client.get(reverse("run-delete", args=[run.pk])).content.decode()
    assert "This cannot be undone." in confirm and "2 files are removed from storage." in confirm
    assert Run.objects.filter(pk=run.pk).exists()
    files = _files(run)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("run-delete", args=[run.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("run-list")
    assert not Run.objects.filter(pk=run.pk).exists() and not any(f.exists() for f in files)


def test_the_page_refuses_to_delete_a_running_run_with_the_reason(alice_client, alice, run_storage):
    run = _run(alice, status=Run.Status.RUNNING, files=False)
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert 'id="run-manage" hidden' in page  # no archive or delete while it runs
    response = alice_client.post(reverse("run-delete", args=[run.pk]), follow=True)
    assert "still running: stop it first" in response.content.decode()
    assert Run.objects.filter(pk=run.pk).exists()


def test_deleting_a_design_deletes_its_runs_and_their_files(
    alice_client, alice, run_storage, django_capture_on_commit_callbacks
):
    run = _run(alice)
    design = run.design_version.design
    files = _files(run)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.delete(reverse("api-design", args=[design.pk]))
    assert response.status_code == 204
    assert not Design.objects.filter(pk=design.pk).exists() and not Run.objects.filter(pk=run.pk).exists()
    assert not any(f.exists() for f in files)


def test_a_design_with_a_running_run_is_not_deleted(alice_client, alice, run_storage):
    run = _run(alice, status=Run.Status.RUNNING)
    design = run.design_version.design
    response = alice_client.delete(reverse("api-design", args=[design.pk]))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "design_busy"
    assert "stop it first" in response.json()["error"]["message"]
    assert Design.objects.filter(pk=design.pk).exists() and Run.objects.filter(pk=run.pk).exists()
    assert all(f.exists() for f in _files(run))

    page = alice_client.post(reverse("design-delete", args=[design.pk]), follow=True).content.decode()
    assert "stop it first" in page and Design.objects.filter(pk=design.pk).exists()


def test_a_design_is_renamed_and_deleted_from_its_pages(alice_client, alice, bob):
    design = design_services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")
    editor = alice_client.get(reverse("design-editor", args=[design.pk])).content.decode()
    assert reverse("design-rename", args=[design.pk]) in editor
    assert reverse("design-delete", args=[design.pk]) in editor

    response = alice_client.post(reverse("design-rename", args=[design.pk]), {"name": "  Digits, take 2 "})
    assert response["Location"] == reverse("design-editor", args=[design.pk])
    design.refresh_from_db()
    assert design.name == "Digits, take 2"
    alice_client.post(reverse("design-rename", args=[design.pk]), {"name": "   "})
    design.refresh_from_db()
    assert design.name == "Digits, take 2"  # a blank name is refused

    confirm = alice_client.get(reverse("design-delete", args=[design.pk])).content.decode()
    assert "Delete the design “Digits, take 2”?" in confirm and "This cannot be undone." in confirm
    assert Design.objects.filter(pk=design.pk).exists()
    response = alice_client.post(reverse("design-delete", args=[design.pk]))
    assert response["Location"] == reverse("dashboard")
    assert not Design.objects.filter(pk=design.pk).exists()

    # Another user's design: not found, untouched.
    bobs = design_services.design_create_from_starter(owner=bob, slug="tiny_cnn_digits")
    assert alice_client.post(reverse("design-rename", args=[bobs.pk]), {"name": "x"}).status_code == 404
    assert alice_client.post(reverse("design-delete", args=[bobs.pk])).status_code == 404
    bobs.refresh_from_db()
    assert bobs.name != "x"


def test_the_api_renames_a_design(alice_client, alice):
    design = design_services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")
    response = alice_client.patch(
        reverse("api-design", args=[design.pk]), {"name": "Renamed"}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["name"] == "Renamed"
    design.refresh_from_db()
    assert design.name == "Renamed" and design.updated_at <= timezone.now()


def test_the_refusal_and_the_pages_speak_korean(alice_client, alice, run_storage):
    run = _run(alice, status=Run.Status.RUNNING, files=False)
    response = alice_client.delete(reverse("api-run", args=[run.pk]), HTTP_ACCEPT_LANGUAGE="ko")
    assert "먼저 중지하거나 끝날 때까지 기다린 다음 삭제하세요" in response.json()["error"]["message"]
    done = _run(alice, files=False)
    page = alice_client.get(reverse("run-detail", args=[done.pk]), HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert ">보관<" in page and "삭제…" in page


def test_the_admin_deletes_a_run_with_its_files_and_keeps_one_that_may_still_train(
    admin_client, alice, run_storage, django_capture_on_commit_callbacks
):
    finished, running = _run(alice), _run(alice, status=Run.Status.RUNNING)
    files = _files(finished)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/training/run/{finished.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Run.objects.filter(pk=finished.pk).exists()
    assert files and not any(f.exists() for f in files)

    # No delete for a run a worker may still write to: the page refuses, the bulk action keeps it.
    assert admin_client.get(f"/admin/training/run/{running.pk}/delete/").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/training/run/",
            {"action": "delete_selected", "_selected_action": [running.pk], "post": "yes"},
        )
    assert Run.objects.filter(pk=running.pk).exists() and all(f.exists() for f in _files(running))


def test_the_admin_deletes_a_design_with_its_runs_and_their_files(
    admin_client, alice, run_storage, django_capture_on_commit_callbacks
):
    run = _run(alice)
    design = run.design_version.design
    files = _files(run)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/designs/design/{design.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Design.objects.filter(pk=design.pk).exists() and not Run.objects.filter(pk=run.pk).exists()
    assert files and not any(f.exists() for f in files)


def test_the_admin_keeps_a_design_with_a_running_run(admin_client, alice, run_storage):
    run = _run(alice, status=Run.Status.RUNNING)
    design = run.design_version.design

    response = admin_client.post(f"/admin/designs/design/{design.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403  # the run in the cascade may not be deleted (RunAdmin)
    assert Design.objects.filter(pk=design.pk).exists() and Run.objects.filter(pk=run.pk).exists()


def test_an_admin_delete_refused_by_the_service_says_why_without_claiming_success(
    admin_client, alice, run_storage, monkeypatch
):
    # The race: the run was finished when the admin built its page and started again before the
    # service took its lock. The service's refusal is what the admin must show.
    run = _run(alice)
    design = run.design_version.design

    def refuse(*, design):
        raise design_services.DesignDeleteRefused(
            "This design has a run that may still train: stop it first."
        )

    monkeypatch.setattr(design_services, "design_delete", refuse)
    response = admin_client.post(f"/admin/designs/design/{design.pk}/delete/", {"post": "yes"}, follow=True)
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/admin/designs/design/{design.pk}/change/"
    assert "stop it first" in page
    assert "deleted successfully" not in page
    assert Design.objects.filter(pk=design.pk).exists() and Run.objects.filter(pk=run.pk).exists()
