"""The "Instructors" group and its permissions, so that a fresh database has it without any command.

On a fresh database the content types and the default view_* permissions are created only after all
migrations (post_migrate), so this migration creates the ones it needs; Django's post_migrate step
then finds them and leaves them alone. ``cancel_run`` is not in Run.Meta (the training app owns that
model): it lives here, beside the group that uses it.
"""

from django.db import migrations

GROUP = "Instructors"

# (app_label, model, codename, name)
PERMISSIONS = [
    ("accounts", "user", "view_user", "Can view user"),
    ("accounts", "course", "view_course", "Can view course"),
    ("accounts", "membership", "view_membership", "Can view membership"),
    ("designs", "design", "view_design", "Can view design"),
    ("designs", "designversion", "view_designversion", "Can view design version"),
    ("designs", "codeartifact", "view_codeartifact", "Can view code artifact"),
    ("training", "run", "view_run", "Can view run"),
    ("training", "runevent", "view_runevent", "Can view run event"),
    ("training", "epochmetric", "view_epochmetric", "Can view epoch metric"),
    ("training", "runartifact", "view_runartifact", "Can view run artifact"),
    ("training", "run", "cancel_run", "Can cancel run"),
]


def create_group(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, model, codename, name in PERMISSIONS:
        content_type, _ = ContentType.objects.get_or_create(app_label=app_label, model=model)
        permission, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        group.permissions.add(permission)


def delete_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    Group.objects.filter(name=GROUP).delete()
    Permission.objects.filter(content_type__app_label="training", codename="cancel_run").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_course_membership"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("designs", "0001_initial"),
        ("training", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
