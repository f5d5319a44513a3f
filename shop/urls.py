from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from inventory.api import ProductListApi
from orders.api import OrderDetailApi, OrderListCreateApi
from payments.api import WalletApi
from shop.api import TokenApi, TokenRevokeApi
from shop.views import landing

api_v1 = [
    path("auth/token", TokenApi.as_view(), name="auth-token"),
    path("auth/token/revoke", TokenRevokeApi.as_view(), name="auth-token-revoke"),
    path("products", ProductListApi.as_view(), name="product-list"),
    path("wallet", WalletApi.as_view(), name="wallet"),
    path("orders", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<int:order_id>", OrderDetailApi.as_view(), name="order-detail"),
]

urlpatterns = [
    path("", landing, name="landing"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include(api_v1)),
    path("", include("monitoring.urls")),
]
if settings.BENCH_ENDPOINT:
    urlpatterns.append(path("api/bench/", include("benchmarks.urls")))

handler400 = "shop.problems.bad_request"
handler404 = "shop.problems.not_found"
handler500 = "shop.problems.server_error"
