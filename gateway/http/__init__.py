"""Server plumbing under every route: the upstream client, the answer writer, timers, drain and memory.

Knows HTTP and aiohttp, nothing of vendors, keys or usage. Imports nothing from the rest of `gateway`.
"""
