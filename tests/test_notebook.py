"""notebooks/pareto_front.ipynb runs top to bottom on a small project's artifacts (so it can't rot)."""
import nbformat
import pytest
from nbclient import NotebookClient

from recmoo_dag.stages.search import main as run
from tests.conftest import REPO
from tests.pareto_support import SMALL, make_pareto_project

pytestmark = pytest.mark.slow


def test_pareto_notebook_executes(project, tmp_path):
    make_pareto_project(tmp_path)
    run(project(SMALL))
    notebook = nbformat.read(REPO / "notebooks" / "pareto_front.ipynb", as_version=4)
    NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("non-dominated policies" in o.get("text", "") for o in outputs)
