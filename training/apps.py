from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from designs.signals import design_deleting
        from training import services

        # dispatch_uid: connected once, however often ready() runs (tests may call it again).
        design_deleting.connect(services.design_runs_delete, dispatch_uid="training.design_runs_delete")
