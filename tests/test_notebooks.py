"""The Colab notebooks in guides/notebooks/ are valid nbformat 4 and in sync with the guides."""

import ast
import doctest
import importlib.util
import json
import pathlib
import shutil

import pytest

GUIDES = pathlib.Path(__file__).parents[1] / "guides"
NOTEBOOKS = sorted((GUIDES / "notebooks").glob("*.ipynb"))
# nbformat 4.4's schema: the keys each cell type has (no more, no fewer here).
CELL_KEYS = {
    "markdown": {"cell_type", "metadata", "source"},
    "code": {"cell_type", "execution_count", "metadata", "outputs", "source"},
}


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "sync_notebooks", GUIDES / "tools" / "sync_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_notebooks = _load_tool()
# The install command is spelled once, in the generator: a local checkout (no release exists).
INSTALL = sync_notebooks.PACKAGE_INSTALL


def test_notebooks_are_in_sync_with_their_guides(capsys):
    status = sync_notebooks.main(["--check"])
    assert status == 0, capsys.readouterr().out


def test_one_notebook_per_guide():
    assert [p.stem for p in NOTEBOOKS] == sorted(p.stem for p in GUIDES.glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_nbformat_4(path):
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    assert set(nb) == {"cells", "metadata", "nbformat", "nbformat_minor"}
    assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int)
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    assert nb["cells"], "no cells"
    for cell in nb["cells"]:
        assert set(cell) == CELL_KEYS[cell["cell_type"]], cell
        assert cell["metadata"] == {}
        assert isinstance(cell["source"], list) and cell["source"]
        assert all(isinstance(line, str) for line in cell["source"])
        assert all(line.endswith("\n") for line in cell["source"][:-1])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    first = nb["cells"][0]
    assert first["cell_type"] == "code" and "".join(first["source"]).startswith("# ")
    assert first["source"][-1].startswith(INSTALL)  # after a comment on where it comes from
    assert "://" not in "".join(first["source"] + nb["cells"][1]["source"])  # no invented URL
    assert nb["cells"][1]["cell_type"] == "markdown"
    assert "".join(nb["cells"][1]["source"]).startswith("# ")  # the guide's title


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_holds_the_whole_guide(path):
    """Its code cells are the guide's code and its markdown cells the guide's prose."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"][1:] if c["cell_type"] == "code")
    guide = ast.parse((GUIDES / f"{path.stem}.py").read_text(encoding="utf-8"))
    statements = [
        ast.dump(node) for node in guide.body
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    assert [ast.dump(node) for node in ast.parse(code).body] == statements
    prose = [c for c in nb["cells"][2:] if c["cell_type"] == "markdown"]
    blocks = [n for n in guide.body[1:]
              if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)]
    assert len(prose) == len(blocks)


def test_check_reports_an_edited_guide_and_sync_fixes_it(tmp_path):
    shutil.copytree(GUIDES, tmp_path / "guides", ignore=shutil.ignore_patterns("__pycache__"))
    guides = tmp_path / "guides"
    guide = guides / "fine_tuning.py"
    guide.write_text(guide.read_text(encoding="utf-8") + "\nprint('one more line')\n",
                     encoding="utf-8")
    (guides / "notebooks" / "removed_guide.ipynb").write_text("{}", encoding="utf-8")
    assert sync_notebooks.main(["--check", "--guides", str(guides)]) == 1
    assert sync_notebooks.sync(guides, check=True) == [
        guides / "notebooks" / "fine_tuning.ipynb", guides / "notebooks" / "removed_guide.ipynb",
    ]
    assert sync_notebooks.main(["--guides", str(guides)]) == 0
    assert sync_notebooks.main(["--check", "--guides", str(guides)]) == 0
    assert "one more line" in (guides / "notebooks" / "fine_tuning.ipynb").read_text()
    assert not (guides / "notebooks" / "removed_guide.ipynb").exists()
    for path in NOTEBOOKS:  # the untouched ones are rewritten byte for byte
        if path.stem != "fine_tuning":
            assert (guides / "notebooks" / path.name).read_bytes() == path.read_bytes()


def test_a_guide_without_header_is_refused():
    with pytest.raises(sync_notebooks.GuideFormatError, match="Title, Author"):
        sync_notebooks.guide_cells('"""Just a docstring."""\nx = 1\n', "bad")
    with pytest.raises(sync_notebooks.GuideFormatError, match="header docstring"):
        sync_notebooks.guide_cells("x = 1\n", "bad")


def test_install_lines_install_the_checkout():
    assert INSTALL.split()[:2] == ["!pip", "install"] and INSTALL.split()[2].startswith("./")
    header = '"""\nTitle: T\nAuthor: A\nDescription: D\nAccelerator: None\n"""\n'
    guide = header + '"""\n`{}`\n"""\nx = 1\n'
    cells = sync_notebooks.guide_cells(header + "x = 1\n", "no_install")
    assert cells[0]["source"][-1] == INSTALL  # a guide naming none gets the package alone
    cells = sync_notebooks.guide_cells(guide.format(INSTALL + " onnx"), "extras")
    assert cells[0]["source"][-1] == INSTALL + " onnx"
    with pytest.raises(sync_notebooks.GuideFormatError, match="must install the checkout"):
        sync_notebooks.guide_cells(guide.format("!pip install git+https://example.org/x"), "url")


def test_tool_docstring_examples():
    result = doctest.testmod(sync_notebooks)
    assert result.attempted > 0 and result.failed == 0
