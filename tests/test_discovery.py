"""Discovery: task folders, entry points, selection, and errors that never skip silently."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from conftest import FIXTURES, TASKS

from evalkit import ConfigError, PluginImportError, Task, UnknownTaskError, as_task, load_tasks, task, verdict
from evalkit.config import load_config
from evalkit.discovery.registry import Registry, bundled_tasks_dir, discover, load_path

ALL_SEVEN = {"addition", "sorting", "reverse", "countdown", "json_extract", "python_functions", "multiple_choice"}


def test_repo_tasks_folder_has_the_seven_examples():
    reg = discover([TASKS], entry_points=False)
    assert set(reg.names()) == ALL_SEVEN


def test_select_by_name_glob_and_tag():
    reg = discover([TASKS], entry_points=False)
    assert [t.name for t in reg.select(["addition"])] == ["addition"]
    assert {t.name for t in reg.select(["*_*"])} >= {"json_extract", "python_functions", "multiple_choice"}
    assert {t.name for t in reg.select(["tag:declarative"])} == {"json_extract", "multiple_choice"}
    assert {t.name for t in reg.select([], tags=["declarative"])} == {"json_extract", "multiple_choice"}
    assert len(reg.select()) == 7


def test_unknown_name_suggests_close_matches():
    reg = discover([TASKS], entry_points=False)
    with pytest.raises(UnknownTaskError, match=r"unknown task 'additon'; did you mean 'addition'"):
        reg.get("additon")
    with pytest.raises(UnknownTaskError, match="no task matches 'zzz\\*'"):
        reg.select(["zzz*"])
    with pytest.raises(UnknownTaskError, match="no task has tag 'nope'"):
        reg.select(["tag:nope"])


def test_plugin_import_error_names_file_and_exception():
    with pytest.raises(PluginImportError) as info:
        discover([FIXTURES / "importerror"], entry_points=False)
    msg = str(info.value)
    assert "oops.py" in msg and "ModuleNotFoundError" in msg and "not_a_real_module_xyz" in msg and "line 3" in msg


def test_syntax_error_in_plugin(tmp_path):
    (tmp_path / "bad.py").write_text("def broken(:\n    pass\n")
    with pytest.raises(PluginImportError, match=r"bad.py.*SyntaxError"):
        load_path(tmp_path)


def test_duplicate_task_names_are_an_error(tmp_path):
    shutil.copy(TASKS / "addition.py", tmp_path / "addition.py")
    shutil.copy(TASKS / "addition.py", tmp_path / "addition_copy.py")
    with pytest.raises(ConfigError, match="defined twice"):
        discover([tmp_path], entry_points=False)


def test_missing_folder_is_an_error_unless_default(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        discover([tmp_path / "nope"], entry_points=False)
    reg = discover([tmp_path / "nope"], entry_points=False, fallback_to_bundled=True)
    assert set(reg.names()) == ALL_SEVEN
    assert bundled_tasks_dir().is_dir()


def test_data_folder_and_private_files_are_not_scanned(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "junk.py").write_text("raise SystemExit('should not be imported')")
    (tmp_path / "_helpers.py").write_text("raise SystemExit('should not be imported')")
    assert len(discover([tmp_path], entry_points=False)) == 0


def test_entry_point_group(tmp_path, monkeypatch):
    """A real installed distribution (a .dist-info on sys.path) registering a task module."""
    pkg = tmp_path / "site"
    (pkg / "myplugin").mkdir(parents=True)
    (pkg / "myplugin" / "__init__.py").write_text(textwrap.dedent('''
        from evalkit import task, verdict

        @task(name="plugin_echo")
        class Echo:
            def rows(self):
                return [{"w": "hi"}]
            def prompt(self, ex):
                return ex["w"]
            def reference(self, ex):
                return ex["w"]
            def check(self, ex, answer):
                return verdict(answer == ex["w"])
    '''))
    dist = pkg / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[evalkit.tasks]\necho = myplugin\n")
    monkeypatch.syspath_prepend(str(pkg))
    reg = discover([TASKS], entry_points=True)
    assert "plugin_echo" in reg and "addition" in reg
    (dist / "entry_points.txt").write_text("[evalkit.tasks]\nbroken = myplugin_missing\n")
    with pytest.raises(PluginImportError, match="entry point broken"):
        discover([], entry_points=True)


def test_pyproject_config(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.evalkit]\ntasks = ["checks"]\nreports = "out"\n')
    (tmp_path / "checks").mkdir()
    shutil.copy(TASKS / "reverse.py", tmp_path / "checks" / "reverse.py")
    sub = tmp_path / "sub"
    sub.mkdir()
    cfg = load_config(sub)
    assert cfg.tasks == ((tmp_path / "checks").resolve(),) and cfg.reports == (tmp_path / "out").resolve()
    assert discover(cfg.tasks, entry_points=False).names() == ["reverse"]
    (tmp_path / "pyproject.toml").write_text('[tool.evalkit]\ntasks = 3\n')
    with pytest.raises(ConfigError, match="tool.evalkit.tasks"):
        load_config(sub)


# -- load_tasks: the public way to ask for tasks --------------------------------------------------


@task(name="shout", tags=("strings",), max_new_tokens=12)
class Shout:
    def generate(self, rng):
        return {"w": rng.choice(["hi", "yo", "ok", "no"]) + str(rng.randrange(1000))}

    def prompt(self, ex):
        return f"upper {ex['w']}:"

    def reference(self, ex):
        return ex["w"].upper()

    def check(self, ex, answer):
        return verdict(answer == ex["w"].upper())


def test_load_tasks_by_name_glob_tag_path_and_object():
    names = lambda tasks: [t.name for t in tasks]  # noqa: E731
    assert names(load_tasks(["addition", "*_extract", "tag:lists"], tasks_dir=[TASKS])) == [
        "addition", "json_extract", "sorting"]
    assert names(load_tasks("reverse", tasks_dir=TASKS)) == ["reverse"]  # one reference, not a list
    assert names(load_tasks(str(TASKS / "sorting.py"))) == ["sorting"]
    assert names(load_tasks(TASKS / "json_extract.yaml")) == ["json_extract"]
    assert set(names(load_tasks(TASKS))) == ALL_SEVEN  # a Path to a folder
    assert names(load_tasks([Shout, "addition", Shout, "addition"], tasks_dir=[TASKS])) == ["shout", "addition"]
    assert names(load_tasks(tags=["declarative"], tasks_dir=[TASKS])) == ["json_extract", "multiple_choice"]
    assert set(names(load_tasks(tasks_dir=[TASKS], entry_points=False))) == ALL_SEVEN
    assert load_tasks([]) == []


def test_load_tasks_resolves_names_like_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pyproject, no tasks/: the bundled examples, as `evalkit run`
    assert [t.name for t in load_tasks("addition")] == ["addition"]
    (tmp_path / "tasks").mkdir()
    shutil.copy(TASKS / "reverse.py", tmp_path / "tasks" / "reverse.py")
    assert [t.name for t in load_tasks(None)] == ["reverse"]  # the project's own tasks/ now
    with pytest.raises(UnknownTaskError, match="unknown task 'addition'"):
        load_tasks(["addition"])
    registry = discover([TASKS], entry_points=False)
    assert load_tasks(["addition"], registry=registry) == [registry.get("addition")]
    calls = []
    lazily = lambda: calls.append(1) or registry  # noqa: E731
    assert load_tasks([Shout], registry=lazily)[0].name == "shout" and calls == []  # not needed, not called
    assert load_tasks("sorting", registry=lazily) == [registry.get("sorting")] and calls == [1]


def test_explicit_tasks_need_no_discovery(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.evalkit]\ntasks = ["missing"]\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_tasks("addition")
    [t] = load_tasks([Shout])  # objects and paths never read the (broken) project
    assert isinstance(t, Task) and t.name == "shout"
    assert [x.name for x in load_tasks(TASKS / "reverse.py")] == ["reverse"]


def test_load_tasks_errors_say_what_was_expected(tmp_path):
    with pytest.raises(UnknownTaskError, match=r"unknown task 'additon'; did you mean 'addition'\?"):
        load_tasks(["additon"], tasks_dir=[TASKS])
    with pytest.raises(UnknownTaskError, match=r"no task has tag 'list'; did you mean 'lists'\?"):
        load_tasks(tags="list", tasks_dir=[TASKS])
    with pytest.raises(TypeError, match=r"tasks\[1\]: expected a task name, glob .* got int 3"):
        load_tasks(["addition", 3], tasks_dir=[TASKS])
    with pytest.raises(TypeError, match="tasks: expected .* or a list of them; got int 7"):
        load_tasks(7)
    with pytest.raises(ConfigError, match="no such task file"):
        load_tasks("tasks/nope.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no task"):
        load_tasks(empty)
    (tmp_path / "shout.py").write_text(textwrap.dedent('''
        from evalkit import task
        @task(name="addition")
        class Other:
            def rows(self): return [{"q": 1}]
            def prompt(self, ex): return "q"
            def check(self, ex, answer): return True
    '''))
    with pytest.raises(ConfigError, match="two different tasks are named 'addition'"):
        load_tasks(["addition", tmp_path / "shout.py"], tasks_dir=[TASKS])


def test_registry_takes_decorated_classes_and_refuses_non_strings_in_select():
    reg = Registry([Shout])
    reg.add(as_task(Shout))  # the same task (same file) again is no conflict
    assert reg.names() == ["shout"] and isinstance(reg.get("shout"), Task)
    assert [t.name for t in reg.select("shout")] == ["shout"]
    with pytest.raises(TypeError, match="takes task names, globs or 'tag:NAME' strings.*load_tasks"):
        reg.select([Shout])
