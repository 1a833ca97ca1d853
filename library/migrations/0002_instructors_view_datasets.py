"""The Instructors group (accounts 0004) may view datasets: their courses' and their students'.

Kept in step with accounts.services.INSTRUCTOR_PERMISSIONS, which instructors_group_sync sets exactly.
"""

from django.db import migrations


def grant(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="library", model="dataset")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="view_dataset", defaults={"name": "Can view dataset"}
    )
    for group in Group.objects.filter(name="Instructors"):
        group.permissions.add(permission)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.filter(content_type__app_label="library", codename="view_dataset").first()
    if permission is not None:
        for group in Group.objects.filter(name="Instructors"):
            group.permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("library", "0001_initial"),
        ("accounts", "0004_instructors_group"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
