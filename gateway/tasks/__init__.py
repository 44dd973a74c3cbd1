"""Async generation: tasks submitted to vendors, polled until they finish, billed exactly once.

model: the task row; store: where rows live (SQLite; Postgres later behind the same interface);
dialects: the client shapes (OpenAI videos, 元境, AI逢源, neutral); engine: submit and poll;
webhooks: callbacks to clients; content: result files streamed through the gateway.
"""
