from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"

    def ready(self) -> None:
        from deployments import signals

        signals.model_version_approved.connect(_deploy_on_approval, dispatch_uid="deployments.deploy_on_approval")


def _deploy_on_approval(sender: object, request: object, **kwargs: object) -> None:
    from deployments import services

    services.deploy_on_approval(request=request)  # type: ignore[arg-type]
