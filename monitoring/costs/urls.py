from django.urls import path

from monitoring.costs import views

urlpatterns = [
    path("costs/", views.cost_dashboard, name="cost-dashboard"),
    path("costs/export.csv", views.cost_export, name="cost-export"),
    path("costs/sync/", views.cost_sync, name="cost-sync"),
    path("costs/syncs/", views.cost_sync_panel, name="cost-sync-panel"),
    path("costs/budgets/", views.budget_list, name="budget-list"),
    path("costs/budgets/<int:pk>/delete/", views.budget_delete, name="budget-delete"),
]
