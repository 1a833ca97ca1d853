"""LLMCall now lives in buildx (buildx 0001 renamed its table): only the state changes here."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0003_instructors_view_feedback"),
        ("buildx", "0001_llm_call_log"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="LLMCall")]),
    ]
