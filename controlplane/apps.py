from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "ControlPlane"

    def ready(self) -> None:
        from controlplane import services
        from workers import aws

        # AWS retries and give-ups are counted per day in the database and shown on the status page.
        aws.set_retry_recorder(services.aws_retries_record)
