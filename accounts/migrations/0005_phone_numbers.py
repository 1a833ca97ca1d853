"""Phone numbers become E.164 with a verified flag; email becomes optional (people sign up by phone).

Existing numbers were typed by admins and nobody verified them: each one that parses (Korea when it has
no country code) is rewritten in E.164 and stays unverified; one that does not parse is kept as typed,
so nothing is lost, and the admin shows it to fix. Blank stays blank. Blank emails become NULL.
"""

import phonenumber_field.modelfields
import phonenumbers
from django.db import migrations, models


def to_e164(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    kept = []
    for pk, stored in User.objects.exclude(phone_number="").values_list("pk", "phone_number").iterator():
        raw = str(stored).strip()
        try:
            number = phonenumbers.parse(raw, "KR")
        except phonenumbers.NumberParseException:
            number = None
        if number is not None and phonenumbers.is_valid_number(number):
            value = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        else:
            kept.append(pk)
            value = raw
        User.objects.filter(pk=pk).update(phone_number=value)
    if kept:
        print(f"\n  accounts.0005: {len(kept)} phone number(s) are not valid and were kept as typed: users {kept}")
    User.objects.filter(email="").update(email=None)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_instructors_group"),
    ]

    operations = [
        migrations.AlterField(
            model_name="user",
            name="email",
            field=models.EmailField(blank=True, max_length=254, null=True, unique=True, verbose_name="email address"),
        ),
        migrations.AddField(
            model_name="user",
            name="phone_verified",
            field=models.BooleanField(db_default=False, default=False, verbose_name="phone number verified"),
        ),
        migrations.RunPython(to_e164, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="user",
            name="phone_number",
            field=phonenumber_field.modelfields.PhoneNumberField(
                blank=True, max_length=128, region=None, verbose_name="phone number"
            ),
        ),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                condition=models.Q(("phone_verified", True)),
                fields=("phone_number",),
                name="unique_verified_phone",
                violation_error_code="phone_taken",
                violation_error_message="This phone number is already verified on another account.",
            ),
        ),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.CheckConstraint(
                condition=models.Q(("phone_verified", False), models.Q(("phone_number", ""), _negated=True), _connector="OR"),
                name="verified_phone_has_number",
                violation_error_code="phone_missing",
                violation_error_message="Only a number can be verified: enter the phone number.",
            ),
        ),
    ]
