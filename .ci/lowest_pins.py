"""Print the lowest versions setup.cfg allows for each runtime dependency, as pip pins (`name==lower`).

`make test-lowest` installs these over the project in a venv of their own and runs the suite, so
every lower bound in setup.cfg is one the suite has passed on.
"""

import configparser
import re
import sys
from pathlib import Path

config = configparser.ConfigParser()
config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
pins = []
for line in config["options"]["install_requires"].strip().splitlines():
    name, lower = re.match(r"\s*([A-Za-z0-9_.\[\]-]+)\s*>=\s*([0-9][^,;\s]*)", line).groups()  # type: ignore[union-attr]
    pins.append(f"{name}=={lower}")
sys.stdout.write("\n".join(pins) + "\n")
