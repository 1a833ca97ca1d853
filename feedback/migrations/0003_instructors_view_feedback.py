"""The Instructors group (accounts 0004) may view feedback: issue 8's "views on ... feedback".

Kept in step with accounts.services.INSTRUCTOR_PERMISSIONS, which instructors_group_sync sets exactly.
"""

from django.db import migrations


def grant(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="feedback", model="feedback")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="view_feedback", defaults={"name": "Can view feedback"}
    )
    for group in Group.objects.filter(name="Instructors"):
        group.permissions.add(permission)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.filter(content_type__app_label="feedback", codename="view_feedback").first()
    if permission is not None:
        for group in Group.objects.filter(name="Instructors"):
            group.permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0002_feedback"),
        ("accounts", "0004_instructors_group"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
