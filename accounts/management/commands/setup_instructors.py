"""Repair the Instructors group: recreate it and its permissions where they went missing.

A fresh database gets the group from migration accounts.0003; this is for one where someone deleted
or edited it by hand.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from accounts import services


class Command(BaseCommand):
    help = "Create the Instructors group with its permissions, or put them back as they should be."

    def handle(self, *args, **options) -> None:
        group = services.instructors_group_sync()
        self.stdout.write(f"{group.name}: {group.permissions.count()} permissions")
