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
    path(
        "models/<slug:project>/<slug:slug>/v<int:number>/request-promotion/",
        views.approval_request_create,
        name="approval-request-create",
    ),
]
