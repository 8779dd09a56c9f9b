from django.urls import path

from lineage import views

urlpatterns = [
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/register/", views.dataset_register, name="dataset-register"),
    path("datasets/registrations/<int:pk>/", views.dataset_registration_detail, name="dataset-registration-detail"),
    path("datasets/<slug:project>/<slug:slug>/", views.dataset_detail, name="dataset-detail"),
    path(
        "datasets/<slug:project>/<slug:slug>/v<int:number>/",
        views.dataset_version_detail,
        name="dataset-version-detail",
    ),
    path("runs/", views.run_list, name="run-list"),
    path("runs/new/transform/", views.transform_create, name="transform-create"),
    path("runs/new/training/", views.training_create, name="training-create"),
    path("runs/estimate/", views.run_estimate, name="run-estimate"),
    path("runs/compare/", views.run_compare, name="run-compare"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/stop/", views.run_stop, name="run-stop"),
    path("runs/<int:pk>/reproduce/", views.run_reproduce, name="run-reproduce"),
    path("models/", views.model_list, name="model-list"),
    path("models/<slug:project>/<slug:slug>/", views.model_detail, name="model-detail"),
    path("models/<slug:project>/<slug:slug>/v<int:number>/", views.model_version_detail, name="model-version-detail"),
    path("lineage/<str:node_id>/", views.lineage_page, name="lineage"),
    path("lineage/<str:node_id>/openlineage.json", views.lineage_openlineage, name="lineage-openlineage"),
]
