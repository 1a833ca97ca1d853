"""The LLM call log moved from feedback to buildx with its rows, ids and content type (issue 13)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("feedback", "0003_instructors_view_feedback"), ("buildx", None)]
AFTER = [("feedback", "0004_llm_call_moves_to_buildx"), ("buildx", "0001_llm_call_log")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state([t for t in targets if t[1]]).apps


@pytest.mark.django_db(transaction=True)
def test_the_rows_ids_and_content_type_follow_the_model():
    old = migrate(BEFORE)
    User = old.get_model("accounts", "User")
    ContentType = old.get_model("contenttypes", "ContentType")
    user = User.objects.create(email="move@example.com", username="move")
    OldCall = old.get_model("feedback", "LLMCall")
    kept = OldCall.objects.create(
        user=user, purpose="feedback", model="m", prompt_hash="h" * 64, response="x"
    )
    content_type, _ = ContentType.objects.get_or_create(app_label="feedback", model="llmcall")
    try:
        new = migrate(AFTER)
        NewCall = new.get_model("buildx", "LLMCall")
        moved = NewCall.objects.get()
        assert (moved.id, moved.user_id, moved.response) == (kept.id, user.id, "x")
        later = NewCall.objects.create(purpose="other", model="m", prompt_hash="i" * 64)
        assert later.id > kept.id  # the id sequence came along
        ContentType = new.get_model("contenttypes", "ContentType")
        assert ContentType.objects.get(id=content_type.id).app_label == "buildx"
    finally:
        migrate(migrate_all_targets())


def migrate_all_targets():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()
