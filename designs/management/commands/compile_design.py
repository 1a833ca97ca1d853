"""`manage.py compile_design spec.json`: validate a spec file and print its script (or its errors)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Validate a design spec (JSON file, or a starter's slug) and print the compiled PyTorch script."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "spec", help="a JSON file, or the slug of a starter design (tiny_cnn_digits, ...)"
        )
        parser.add_argument("--name", default="", help="the design's name, for the script's docstring")
        parser.add_argument("--report", action="store_true", help="print the validation report instead")

    def handle(self, *args, spec: str, name: str, report: bool, **options) -> None:
        from designs import compiler, services
        from designs.validation import SpecError

        starter = services.starter_get(slug=spec)
        if starter is not None:
            raw, name = starter["spec"], name or starter["title"]["en"]
        else:
            try:
                raw = json.loads(Path(spec).read_text())
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot read {spec}: {exc}") from exc
        try:
            normalised, result = services.spec_validate(spec=raw)
        except SpecError as exc:
            raise CommandError(
                "\n".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.fields.items())
            ) from exc
        if report:
            self.stdout.write(json.dumps(result, indent=2, ensure_ascii=False))
            return
        if not result["valid"]:
            raise CommandError(
                "\n".join(f"{e['layer'] or e['path']}: {e['message']} {e['hint']}" for e in result["errors"])
            )
        self.stdout.write(
            compiler.compile_spec(
                normalised, design_name=name or normalised["model_name"], version_number=1, report=result
            ),
            ending="",
        )
