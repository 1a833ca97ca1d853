from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from buildx import metrics
        from training.selectors import run_status_counts

        metrics.register_collector(
            "runs",
            metrics.GaugeCollector(
                "buildx_runs", "Runs by status, from the database.", "status", run_status_counts
            ),
        )
        from designs.signals import design_deleting
        from training import services

        # dispatch_uid: connected once, however often ready() runs (tests may call it again).
        design_deleting.connect(services.design_runs_delete, dispatch_uid="training.design_runs_delete")
        from training import actors, signals

        signals.run_finished.connect(actors.mlflow_log_queue, dispatch_uid="training.mlflow_log_queue")
