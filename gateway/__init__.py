"""The gateway server: app factory, auth, routing, relay pipeline, streaming, usage writer, CLI."""
