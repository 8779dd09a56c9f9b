from django.urls import path

from deployments import api, deploy_api

urlpatterns = [
    path("environments/", api.EnvironmentListApi.as_view(), name="api-environment-list"),
    path("environments/<slug:name>/", api.EnvironmentDetailApi.as_view(), name="api-environment-detail"),
    path("approval-requests/", api.ApprovalRequestListApi.as_view(), name="api-approval-request-list"),
    path("approval-requests/<int:pk>/", api.ApprovalRequestDetailApi.as_view(), name="api-approval-request-detail"),
    path(
        "approval-requests/<int:pk>/decisions/",
        api.ApprovalDecisionCreateApi.as_view(),
        name="api-approval-request-decide",
    ),
    path(
        "approval-requests/<int:pk>/withdraw/",
        api.ApprovalRequestWithdrawApi.as_view(),
        name="api-approval-request-withdraw",
    ),
    path(
        "model-versions/<int:pk>/approvals/",
        api.ModelVersionApprovalsApi.as_view(),
        name="api-model-version-approvals",
    ),
    path("services/", deploy_api.ServiceListApi.as_view(), name="api-service-list"),
    path("services/<int:pk>/", deploy_api.ServiceDetailApi.as_view(), name="api-service-detail"),
    path("services/<int:pk>/rollback/", deploy_api.ServiceRollbackApi.as_view(), name="api-service-rollback"),
    path("services/<int:pk>/scale/", deploy_api.ServiceScaleApi.as_view(), name="api-service-scale"),
    path(
        "services/<int:pk>/rotate-ingest-token/",
        deploy_api.ServiceIngestTokenRotateApi.as_view(),
        name="api-service-rotate-ingest-token",
    ),
    path("deployments/", deploy_api.DeploymentListApi.as_view(), name="api-deployment-list"),
    path("deployments/<int:pk>/", deploy_api.DeploymentDetailApi.as_view(), name="api-deployment-detail"),
]
