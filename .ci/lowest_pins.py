"""Print the lowest versions setup.cfg allows for each runtime dependency and those of the `scale` extra
(Redis, PostgreSQL: the test extra installs them too), as pip pins (`name==lower`).

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
lines = config["options"]["install_requires"].strip().splitlines()
lines += config["options.extras_require"]["scale"].strip().splitlines()
for line in lines:
    name, lower = re.match(r"\s*([A-Za-z0-9_.\[\]-]+)\s*>=\s*([0-9][^,;\s]*)", line).groups()  # type: ignore[union-attr]
    pins.append(f"{name}=={lower}")
sys.stdout.write("\n".join(pins) + "\n")
