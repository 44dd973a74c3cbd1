"""Money and limits: prices and cost, rpm/tpm windows, budgets with reservations (docs/billing.md)."""
