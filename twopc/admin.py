from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from twopc.models import Decision
from twopc.recovery import in_doubt_branches, resolve_branch


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    """The coordinator log, and (its own page) the branches still prepared on every participant database."""

    list_display = ["gtrid", "decision", "order_id", "branch_list", "decided_at"]
    list_filter = ["decision"]
    search_fields = ["=gtrid", "=order_id"]
    date_hierarchy = "decided_at"
    readonly_fields = [f.name for f in Decision._meta.fields]
    change_list_template = "admin/twopc/decision/change_list.html"

    @admin.display(description="branches")
    def branch_list(self, decision: Decision) -> str:
        return ", ".join(decision.branches)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Decision | None = None) -> bool:
        return False

    def get_urls(self):  # type: ignore[no-untyped-def]
        return [path("in-doubt/", self.admin_site.admin_view(self.in_doubt_view), name="twopc_decision_in_doubt"),
                *super().get_urls()]

    def in_doubt_view(self, request: HttpRequest) -> HttpResponse:
        """Prepared branches with the log's decision; POST resolves one now, as recovery would with no grace
        period: commit what the log decided to commit, roll back the rest (presumed abort)."""
        branches = in_doubt_branches()
        if request.method == "POST":
            if not self.has_delete_permission(request):
                return HttpResponse(status=403)
            wanted = (request.POST.get("alias"), request.POST.get("gtrid"))
            for branch in branches:
                if (branch.alias, branch.gtrid) == wanted:
                    resolution = resolve_branch(branch, grace_seconds=0)
                    self.message_user(request, f"Resolved: {resolution.line()}", messages.SUCCESS)
                    break
            else:
                self.message_user(request, "That branch is no longer prepared.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:twopc_decision_in_doubt"))
        context = {**self.admin_site.each_context(request), "title": "In-doubt branches", "branches": branches,
                   "opts": self.model._meta}
        return TemplateResponse(request, "admin/twopc/decision/in_doubt.html", context)
