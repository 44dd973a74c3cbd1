"""The gateway server: app factory, auth, routing, relay pipeline, streaming, usage writer, CLI."""

# setup.cfg reads the package's version from here; `gateway version` asks the installed metadata first.
__version__ = "0.1.0"
