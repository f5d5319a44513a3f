"""Cross-service operations: checks and chores that span every service, each reading or writing a service
only through its `selectors.py` and `services.py`.

- `audit`: the consistency invariants of DESIGN.md section 8 (`manage.py audit`, exit 1 on a violation).
- `demo`: the demo data of the API contract (`manage.py seed`), composed of each service's own seed and
  reset functions; also the admin user `make run` creates.
"""
