"""No import cycles anywhere in the project, lazy imports inside functions included.

The graph is read with `ast` (tests/import_graph.py), so a cycle hidden behind a function-level
import counts too: it still means two modules cannot be understood without each other.
"""

from __future__ import annotations

from import_graph import cycles, import_graph, unresolved_imports


def test_the_project_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(loop) for loop in found)


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "mockservers.profile_files" in graph["mockservers.lint"]  # relative, module level
    assert "mockservers.lint" in graph["mockservers.profile"]
    assert "mockservers.profile" not in graph["mockservers.lint"]  # the old cycle stays gone


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_only_itself() -> None:
    """mailprotocol is the pure core: servers and the engine import it, never the other way."""
    graph = import_graph()
    outside = {
        (module, target)
        for module, targets in graph.items() if module.split(".")[0] == "mailprotocol"
        for target in targets if target.split(".")[0] != "mailprotocol"
    }  # fmt: skip
    assert outside == set(), f"mailprotocol imports outside the core: {sorted(outside)}"


def test_every_project_import_names_something_that_exists() -> None:
    """A module moved away leaves `from ..faults import X` behind: found here, not when it runs."""
    assert unresolved_imports() == []
