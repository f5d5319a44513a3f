from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from benchmarks.serializers import BenchInsertSerializer
from benchmarks.services import bench_row_create


class BenchInsertApi(APIView):
    """The baseline of `make bench`: the same server, framework and JSON parsing as POST /orders, and one
    INSERT. No authentication and no throttling, so nothing but the framework and that statement is measured;
    it is mounted only when BENCH_ENDPOINT=1."""

    authentication_classes: list = []  # type: ignore[type-arg]
    permission_classes = [AllowAny]
    throttle_classes: list = []  # type: ignore[type-arg]

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        serializer = BenchInsertSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = bench_row_create(note=serializer.validated_data["note"])
        return Response({"id": row.pk}, status=status.HTTP_201_CREATED)
