"""Pages for people: GET / says where to go."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_the_root_is_a_landing_page_linking_admin_docs_health_and_metrics():
    response = APIClient().get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for link in ('href="/admin/"', 'href="/api/docs/"', 'href="/health/live"', 'href="/metrics"'):
        assert link in page, link
