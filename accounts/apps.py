from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
    # allauth's "account" app is "Accounts" in the admin (e-mail addresses): one heading each, not two alike.
    verbose_name = _("Users and courses")
