"""Finding tasks: task folders (Python and YAML files), the `evalkit.tasks` entry points, the Registry,
and `load_tasks` (tasks by name, glob, tag, path or object)."""

from evalkit.discovery.load import TaskRef, load_tasks
from evalkit.discovery.registry import (
                                        ENTRY_POINT_GROUP,
                                        Registry,
                                        bundled_tasks_dir,
                                        discover,
                                        load_entry_points,
                                        load_path,
)

__all__ = ["ENTRY_POINT_GROUP", "Registry", "TaskRef", "bundled_tasks_dir", "discover", "load_entry_points",
           "load_path", "load_tasks"]
