"""The one thing setup.cfg cannot say: the optional C extension (gateway/billing/_lane.c, the limits'
per-request calls). Without a compiler the build skips it and the gateway runs on the Python lanes."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gateway.billing._lane", ["gateway/billing/_lane.c"], optional=True)])
