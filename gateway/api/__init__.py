"""The client surfaces: one module per API (OpenAI, model lists, realtime), the body readers they share,
and the pipeline every route passes through (context, auth, error rendering, usage row, access line)."""
