"""The model-free admin, the django-rq way: an unmanaged model gives the admin
index its entry and Django its permissions; ``get_urls()`` serves our own
class-based views (admin_views.py), each wrapped in ``admin_site.admin_view``
(staff login, CSRF, no caching)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path

from . import admin_views as views
from .admin_limits import LimitsAction
from .admin_schedules import SchedulesPage
from .models import JobQueue

if TYPE_CHECKING:
    # django-stubs' ModelAdmin is generic only for type checkers.
    _JobQueueModelAdmin = admin.ModelAdmin[JobQueue]
else:
    _JobQueueModelAdmin = admin.ModelAdmin


@admin.register(JobQueue)
class JobQueueAdmin(_JobQueueModelAdmin):
    def has_module_permission(self, request: HttpRequest) -> bool:
        return views.can_view(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return views.can_view(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The index links here: the overview is this "model"'s change list.
        return views.OverviewPage.as_view(admin_site=self.admin_site)(request)

    def get_urls(self) -> list[Any]:
        def wrap(view: type[views.AdminPage]) -> Any:
            return self.admin_site.admin_view(view.as_view(admin_site=self.admin_site))

        name = "django_jobqueue"
        # No add/change/delete/history URLs: there are no rows to show.
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name=f"{name}_jobqueue_changelist"),
            path("overview.json", wrap(views.OverviewJSON), name=f"{name}_overview_json"),
            path("search/", wrap(views.SearchPage), name=f"{name}_search"),
            path("schedules/", wrap(SchedulesPage), name=f"{name}_schedules"),
            path("<str:queue>/action/", wrap(views.ActionView), name=f"{name}_action"),
            path("<str:queue>/limits/", wrap(LimitsAction), name=f"{name}_limits"),
            path("<str:queue>/summary.json", wrap(views.SummaryJSON), name=f"{name}_summary_json"),
            path("<str:queue>/job/<str:job_id>/", wrap(views.JobPage), name=f"{name}_job"),
            path("<str:queue>/job/<str:job_id>/status.json", wrap(views.JobJSON), name=f"{name}_job_json"),
            path("<str:queue>/<str:which>/", wrap(views.ListPage), name=f"{name}_list"),
        ]
