from django.urls import path

from lineage import api

urlpatterns = [
    path("datasets/", api.DatasetListApi.as_view(), name="api-dataset-list"),
    path("datasets/<slug:project>/<slug:slug>/", api.DatasetDetailApi.as_view(), name="api-dataset-detail"),
    path(
        "datasets/<slug:project>/<slug:slug>/versions/",
        api.DatasetVersionListApi.as_view(),
        name="api-dataset-version-list",
    ),
    path("dataset-versions/", api.DatasetVersionUploadApi.as_view(), name="api-dataset-version-upload"),
    path("dataset-versions/<int:pk>/", api.DatasetVersionDetailApi.as_view(), name="api-dataset-version-detail"),
    path(
        "dataset-versions/<int:pk>/profile/", api.DatasetVersionProfileApi.as_view(), name="api-dataset-version-profile"
    ),
    path(
        "dataset-versions/<int:pk>/download/",
        api.DatasetVersionDownloadApi.as_view(),
        name="api-dataset-version-download",
    ),
    path("dataset-registrations/", api.DatasetRegistrationCreateApi.as_view(), name="api-dataset-registration-create"),
    path(
        "dataset-registrations/<int:pk>/",
        api.DatasetRegistrationDetailApi.as_view(),
        name="api-dataset-registration-detail",
    ),
    path("dataset-uploads/", api.DirectUploadCreateApi.as_view(), name="api-dataset-upload-create"),
    path("dataset-uploads/parts/", api.DirectUploadPartsApi.as_view(), name="api-dataset-upload-parts"),
    path("dataset-uploads/complete/", api.DirectUploadCompleteApi.as_view(), name="api-dataset-upload-complete"),
    path("runs/", api.RunListApi.as_view(), name="api-run-list"),
    path("runs/transform/", api.TransformRunCreateApi.as_view(), name="api-run-transform-create"),
    path("runs/training/", api.TrainingRunCreateApi.as_view(), name="api-run-training-create"),
    path("runs/estimate/", api.RunEstimateApi.as_view(), name="api-run-estimate"),
    path("runs/<int:pk>/", api.RunDetailApi.as_view(), name="api-run-detail"),
    path("runs/<int:pk>/stop/", api.RunStopApi.as_view(), name="api-run-stop"),
    path("runs/<int:pk>/logs/", api.RunLogsApi.as_view(), name="api-run-logs"),
    path("runs/<int:pk>/metrics/", api.RunMetricsApi.as_view(), name="api-run-metrics"),
    path("runs/<int:pk>/reproduce/", api.RunReproduceApi.as_view(), name="api-run-reproduce"),
    path("models/", api.ModelListApi.as_view(), name="api-model-list"),
    path(
        "models/<slug:project>/<slug:slug>/versions/", api.ModelVersionListApi.as_view(), name="api-model-version-list"
    ),
    path("model-versions/<int:pk>/", api.ModelVersionDetailApi.as_view(), name="api-model-version-detail"),
    path("recipes/", api.RecipeListApi.as_view(), name="api-recipe-list"),
    path("lineage/<str:node_id>/", api.LineageApi.as_view(), name="api-lineage"),
    path("lineage/<str:node_id>/openlineage/", api.LineageOpenLineageApi.as_view(), name="api-lineage-openlineage"),
]
