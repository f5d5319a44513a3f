from django.urls import path

from monitoring import health, metrics

urlpatterns = [
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ReadinessView.as_view(), name="health-ready"),
    path("metrics", metrics.metrics_view, name="metrics"),
]
