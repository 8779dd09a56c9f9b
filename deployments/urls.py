from django.urls import path

from deployments import views

urlpatterns = [
    # --- environments (admins configure them here, not only in the Django admin) ---
    path("environments/", views.environment_list, name="environment-list"),
    path("environments/new/", views.environment_create, name="environment-create"),
    path("environments/<slug:name>/", views.environment_detail, name="environment-detail"),
    # --- approval requests ---
    path("approvals/", views.approval_queue, name="approval-queue"),
    path("approvals/<int:pk>/", views.approval_request_detail, name="approval-request-detail"),
    path("approvals/<int:pk>/decide/", views.approval_decide, name="approval-decide"),
    path("approvals/<int:pk>/withdraw/", views.approval_withdraw, name="approval-withdraw"),
    # --- services, deployments and rollbacks ---
    path("services/", views.service_list, name="service-list"),
    path("services/<int:pk>/", views.service_detail, name="service-detail"),
    path("services/<int:pk>/rollback/", views.service_rollback, name="service-rollback"),
    path("services/<int:pk>/scale/", views.service_scale, name="service-scale"),
    path(
        "services/<int:pk>/rotate-ingest-token/",
        views.service_rotate_ingest_token,
        name="service-rotate-ingest-token",
    ),
    path("deployments/new/", views.deployment_create, name="deployment-create"),
    path(
        "models/<slug:project>/<slug:slug>/v<int:number>/request-promotion/",
        views.approval_request_create,
        name="approval-request-create",
    ),
]
