from django.db import migrations


def name_the_site(apps, schema_editor):
    # allauth's mails say "[<site name>] ..." and "Hello from <site name>!": not "example.com".
    Site = apps.get_model("sites", "Site")
    Site.objects.update_or_create(pk=1, defaults={"domain": "buildx.local", "name": "BuildX"})


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("sites", "0002_alter_domain_unique"),
    ]

    operations = [migrations.RunPython(name_the_site, migrations.RunPython.noop)]
