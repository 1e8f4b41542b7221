"""Where ingest nodes run: this machine's processes, or Amazon ECS tasks."""
