"""The async-generation vendors' adaptors: golden tests of the calls they build and the answers they read, no HTTP."""
