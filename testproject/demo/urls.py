from django.urls import path

from . import views

app_name = "demo"
urlpatterns = [
    path("", views.index, name="index"),
    path("signup/", views.signup, name="signup"),
    path("api/state/", views.state, name="state"),
    path("api/enqueue/", views.enqueue_batch, name="enqueue"),
    path("api/pool/", views.configure_pool, name="pool"),
    path("api/reclaim/", views.reclaim, name="reclaim"),
    path("api/payments/", views.queue_payments, name="payments"),
    path("api/rates/", views.fetch_rates, name="rates"),
    path("api/report/", views.start_report, name="report"),
    path("api/report/<str:job_id>/", views.report_state, name="report_state"),
    path("api/report/<str:job_id>/cancel/", views.cancel_report, name="report_cancel"),
]
