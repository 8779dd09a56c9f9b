from django.urls import path

from monitoring import read_api

urlpatterns = [
    path("services/<int:pk>/metrics/", read_api.ServiceMetricsApi.as_view(), name="api-service-metrics"),
    path("services/<int:pk>/drift/", read_api.ServiceDriftApi.as_view(), name="api-service-drift"),
    path("alerts/", read_api.AlertListApi.as_view(), name="api-alert-list"),
]
