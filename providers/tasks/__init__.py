"""Async generation vendors (video, images), each behind the `TaskVendor` interface in `providers.tasks.base`."""

from providers.tasks.ark import Ark
from providers.tasks.base import TaskVendor
from providers.tasks.dashscope import DashScope
from providers.tasks.sora import Sora
from providers.tasks.vidu import Vidu

# By channel `provider`. OpenAI's channels serve Sora's /videos under their usual base_url.
TASK_VENDORS: dict[str, TaskVendor] = {v.name: v for v in (Sora(), DashScope(), Ark(), Vidu())}

__all__ = ["TASK_VENDORS", "TaskVendor"]
