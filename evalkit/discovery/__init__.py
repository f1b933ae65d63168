"""Finding tasks: task folders (Python and YAML files), the `evalkit.tasks` entry points, the Registry."""

from evalkit.discovery.registry import (ENTRY_POINT_GROUP, Registry, bundled_tasks_dir, discover, load_entry_points,
                                        load_path)

__all__ = ["ENTRY_POINT_GROUP", "Registry", "bundled_tasks_dir", "discover", "load_entry_points", "load_path"]
