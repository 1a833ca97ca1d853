"""The LLM call log moves from feedback to the project level, beside the LLM client (issue 13).

The table is renamed, not copied: rows, ids and indexes stay; the content type follows, so admin
history and any permission given on it stay attached.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def move_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="buildx", model="llmcall").exists():
        ContentType.objects.filter(app_label="feedback", model="llmcall").update(app_label="buildx")


def move_content_type_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="feedback", model="llmcall").exists():
        ContentType.objects.filter(app_label="buildx", model="llmcall").update(app_label="feedback")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("feedback", "0003_instructors_view_feedback"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='LLMCall',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('purpose', models.CharField(choices=[('codegen', 'Code generation'), ('code_repair', 'Code repair'), ('feedback', 'Feedback narrative'), ('error_explanation', 'Error explanation'), ('other', 'Other')], default='other', max_length=32, verbose_name='purpose')),
                        ('model', models.CharField(max_length=100, verbose_name='model')),
                        ('prompt_hash', models.CharField(max_length=64)),
                        ('tokens_in', models.PositiveIntegerField(default=0, verbose_name='prompt tokens')),
                        ('tokens_out', models.PositiveIntegerField(default=0, verbose_name='completion tokens')),
                        ('cost', models.DecimalField(decimal_places=6, default=0, max_digits=12, verbose_name='cost (USD)')),
                        ('latency_ms', models.PositiveIntegerField(default=0, verbose_name='latency (ms)')),
                        ('cached', models.BooleanField(default=False, verbose_name='answered from the cache')),
                        ('attempts', models.PositiveSmallIntegerField(default=0, verbose_name='HTTP attempts')),
                        ('error', models.CharField(blank=True, max_length=32, verbose_name='error')),
                        ('error_detail', models.TextField(blank=True, verbose_name='error detail')),
                        ('response', models.TextField(blank=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='llm_calls', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'ordering': ['-created_at'],
                        'indexes': [models.Index(fields=['user', 'created_at'], name='llmcall_user_time'), models.Index(fields=['prompt_hash', 'created_at'], name='llmcall_prompt_time')],
                    },
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE feedback_llmcall RENAME TO buildx_llmcall",
                    reverse_sql="ALTER TABLE buildx_llmcall RENAME TO feedback_llmcall",
                ),
            ],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
