"""The LLM call record in the Django admin: visible to staff, never editable."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import get_user_model

from buildx.models import LLMCall


def test_staff_see_what_each_llm_call_cost_and_cannot_change_it(client, alice):
    admin = get_user_model().objects.create_superuser(email="root@example.com", password="pw-root-123456")
    call = LLMCall.objects.create(
        user=alice, purpose="feedback", model="test-model", prompt_hash="a" * 64, tokens_in=1200,
        tokens_out=300, cost=Decimal("0.000360"), latency_ms=850, attempts=1,
    )  # fmt: skip
    client.force_login(admin)

    listing = client.get("/admin/buildx/llmcall/")
    assert listing.status_code == 200
    body = listing.content.decode()
    assert "alice@example.com" in body and "0.000360" in body and "1200" in body

    assert client.get("/admin/buildx/llmcall/add/").status_code == 403
    detail = client.get(f"/admin/buildx/llmcall/{call.id}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    client.post(f"/admin/buildx/llmcall/{call.id}/change/", {"tokens_in": 1})
    call.refresh_from_db()
    assert call.tokens_in == 1200
