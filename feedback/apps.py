from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "feedback"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from feedback import services
        from training import signals

        # dispatch_uid: connected once, however often ready() runs (tests may call it again).
        signals.run_finished.connect(services.run_finished, dispatch_uid="feedback.run_finished")
