from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        # Celery's autodiscovery imports only <app>.tasks; the CloudWatch pull's and the drift job's tasks live
        # beside it.
        from monitoring import tasks_drift, tasks_pull  # noqa: F401
        from monitoring.costs import tasks as cost_tasks  # noqa: F401
