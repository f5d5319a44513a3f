from django.urls import path

from monitoring import health

urlpatterns = [
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ReadinessView.as_view(), name="health-ready"),
]
