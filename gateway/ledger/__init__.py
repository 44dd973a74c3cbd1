"""What a request is billed: the usage row, its price, the writer behind the `UsageSink` interface, the
spool that keeps rows when the database cannot take them, and the report."""
