from django.urls import path

from monitoring import api

urlpatterns = [
    path("ingest/metrics/", api.IngestMetricsApi.as_view(), name="api-ingest-metrics"),
]
