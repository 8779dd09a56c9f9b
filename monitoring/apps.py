from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        # Celery's autodiscovery imports each app's `tasks` only; the CloudWatch pull's task lives beside it.
        from monitoring import tasks_pull  # noqa: F401
