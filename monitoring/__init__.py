"""Operations endpoints: /health/live, /health/ready (health.py) and /metrics (metrics.py; gunicorn's
multiprocess folder for it is set up in runtime/gunicorn_config.py)."""
