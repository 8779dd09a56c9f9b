from django.urls import path

from monitoring.costs import api

urlpatterns = [
    path("costs/", api.CostsApi.as_view(), name="api-costs"),
    path("budgets/", api.BudgetListApi.as_view(), name="api-budget-list"),
    path("budgets/<int:pk>/", api.BudgetDetailApi.as_view(), name="api-budget-detail"),
    path("cost-syncs/", api.CostSyncListApi.as_view(), name="api-cost-sync-list"),
    path("cost-syncs/<int:pk>/", api.CostSyncDetailApi.as_view(), name="api-cost-sync-detail"),
]
