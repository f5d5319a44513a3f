from django.core.management.base import BaseCommand, CommandError

from operations.audit import run_audit


class Command(BaseCommand):
    help = "Check the consistency invariants (DESIGN.md section 8) in the database; exit 1 on any violation."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        checks = run_audit()
        for check in checks:
            style = self.style.SUCCESS if check.ok else self.style.ERROR
            self.stdout.write(style(check.line()))
        failed = [check.name for check in checks if not check.ok]
        if failed:
            raise CommandError(f"audit failed: {', '.join(failed)}")
