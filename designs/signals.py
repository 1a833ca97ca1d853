"""Hooks the designs app offers the apps above it (docs/contracts.md section 10)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by designs.services.design_delete inside its transaction, before the design and its versions
# are deleted, with ``design``. The runs app connects to it: it deletes the design's runs with their
# files in storage, or refuses (raises designs.services.DesignDeleteRefused) while one is active, which
# rolls the whole delete back.
design_deleting = Signal()
