"""From a checked request to an answer: which channels to try (routing, key health), the attempts, and
the forwarding of each answer (JSON whole, streams through the pump and its filters)."""
