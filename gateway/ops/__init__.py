"""What operators see: the Prometheus metrics, /metrics and /admin/status."""
