from django.urls import path

from monitoring import views

urlpatterns = [
    path("monitoring/", views.overview, name="monitoring-overview"),
    path("monitoring/alerts/", views.alert_list, name="alert-list"),
    path("services/<int:pk>/monitoring/", views.service_metrics, name="service-metrics"),
    path("services/<int:pk>/drift/", views.service_drift, name="service-drift"),
]
