from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from controlplane import api, views

api_v1 = [
    path("me/", api.MeApi.as_view(), name="api-me"),
    path("projects/", api.ProjectListApi.as_view(), name="api-project-list"),
    path("projects/<slug:slug>/", api.ProjectDetailApi.as_view(), name="api-project-detail"),
    path("projects/<slug:slug>/members/", api.ProjectMemberListApi.as_view(), name="api-project-members"),
    path(
        "projects/<slug:slug>/members/<str:username>/",
        api.ProjectMemberDetailApi.as_view(),
        name="api-project-member-detail",
    ),
    path("audit-events/", api.AuditEventListApi.as_view(), name="api-audit-list"),
    path("system-checks/", api.SystemCheckCreateApi.as_view(), name="api-system-check-create"),
    path("system-checks/<int:pk>/", api.SystemCheckDetailApi.as_view(), name="api-system-check-detail"),
    path("notifications/", api.NotificationListApi.as_view(), name="api-notification-list"),
    path("notifications/read/", api.NotificationsReadApi.as_view(), name="api-notifications-read"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("", include("lineage.api_urls")),
    path("", include("deployments.api_urls")),
    path("", include("monitoring.api_urls")),
    path("", include("monitoring.read_api_urls")),
    path("", include("monitoring.costs.api_urls")),
    # Last: any other /api/v1/ address is a JSON 404, never an HTML page.
    re_path(r"^(?P<path>.*)$", views.api_not_found, name="api-not-found"),
]

# Refusals and unknown addresses answer in the site layout, or as the API's JSON error body under /api/.
handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.page_not_found
handler500 = views.server_error

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/token/", views.api_token, name="api-token"),
    path("notifications/", views.notification_list, name="notification-list"),
    path("notifications/<int:pk>/open/", views.notification_open, name="notification-open"),
    path("projects/", views.project_list, name="project-list"),
    path("projects/new/", views.project_create, name="project-create"),
    path("projects/<slug:slug>/", views.project_detail, name="project-detail"),
    path("projects/<slug:slug>/access/", views.project_restrict, name="project-restrict"),
    path("projects/<slug:slug>/members/", views.project_member_set, name="project-member-set"),
    path(
        "projects/<slug:slug>/members/<str:username>/remove/",
        views.project_member_remove,
        name="project-member-remove",
    ),
    path("audit/", views.audit_list, name="audit-list"),
    path("audit/export.csv", views.audit_export, name="audit-export"),
    path("status/", views.system_status, name="system-status"),
    path("status/checks/", views.system_check_create, name="system-check-create"),
    path("status/checks/<int:pk>/", views.system_check_detail, name="system-check-detail"),
    path("objects/<path:key>", views.object_download, name="object-download"),
    # DRF views opt out of LoginRequiredMiddleware; the docs page is a page, so it needs sign-in and a role.
    path(
        "docs/api/",
        views.page_requires("apidocs.view")(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    path("", include("lineage.urls")),
    path("", include("deployments.urls")),
    path("", include("monitoring.urls")),
    path("", include("monitoring.costs.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]
