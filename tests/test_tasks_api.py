"""rnnkit.tasks' public names: the task classes and each task module's load_run as load_<module>_run,
and a directory that holds no run refused with one line."""

import importlib

import pytest

import rnnkit.tasks as tasks
from rnnkit.errors import UserError

MODULES = ("lm", "memory", "caption", "classify", "translate")


def test_every_exported_name_is_there():
    for name in tasks.__all__:
        assert getattr(tasks, name) is not None, name
    assert {n for n in tasks.__all__ if n.endswith("Task")} == {
        "LMTask", "MemoryTask", "CaptionTask", "ClassifyTask", "PretrainTask", "TranslateTask"}


@pytest.mark.parametrize("module", MODULES)
def test_load_run_is_exported_under_the_module_name(module):
    own = importlib.import_module(f"rnnkit.tasks.{module}").load_run
    assert getattr(tasks, f"load_{module}_run") is own


@pytest.mark.parametrize("module", MODULES)
def test_a_directory_without_a_run_is_one_user_error(module, tmp_path):
    with pytest.raises(UserError) as e:
        getattr(tasks, f"load_{module}_run")(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
