from django.urls import path

from benchmarks.api import BenchInsertApi

urlpatterns = [
    path("insert", BenchInsertApi.as_view(), name="bench-insert"),
]
