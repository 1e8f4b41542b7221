"""Liveness, readiness and Prometheus metrics for every castway process: one answer
(:mod:`castway.health.report`) served by two shells, ASGI for processes with a web app
(:mod:`castway.health.asgi`) and a threaded WSGI server for those whose main thread belongs to
another loop, the Celery worker and ``castway scheduler run`` (:mod:`castway.health.wsgi`)."""
