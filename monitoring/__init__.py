"""Operations endpoints: /health/live, /health/ready (health.py), /metrics (metrics.py), and the gunicorn settings
that let every web worker be counted (gunicorn.py)."""
