"""`make bench`: the gateway against a bare aiohttp forwarder and the mock vendor itself (SPEC section 9)."""
