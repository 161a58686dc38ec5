"""Results folders, their metadata, and the paper's numbers read from data/paper_tables.csv."""
import json
import shutil

import matplotlib
import nbformat
import pandas as pd
import pytest

from diffprune_core import paper, results
from diffprune_core.errors import InputError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def notebook(tmp_path, monkeypatch):
    """A notebook 'demo' with two parameters, in a notebooks folder of its own; results under tmp_path."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    cell = nbformat.v4.new_code_cell('seed: int = 0  # the seed\nsizes: list[int] = [1, 2]  # the sizes')
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    nbformat.write(nb, folder / "demo.ipynb")
    monkeypatch.setattr(results, "NOTEBOOKS_DIR", folder)
    monkeypatch.setenv("DIFFPRUNE_RESULTS", str(tmp_path / "results"))
    return "demo"


def test_defaults_come_from_the_parameters_cell(notebook):
    assert results.default_parameters(notebook) == {"seed": 0, "sizes": [1, 2]}
    assert results.notebook_parameters(notebook, {"seed": 3, "sizes": (1, 2), "other": 1}) == {"seed": 3, "sizes": (1, 2)}


def test_default_parameters_go_to_default_and_others_never_overwrite_them(notebook, tmp_path):
    default = results.results_dir(notebook, {"seed": 0, "sizes": (1, 2)})  # a tuple equals the default list
    assert default == tmp_path / "results" / "demo" / "default"
    (default / "table.csv").write_text("x\n1\n")
    other = results.results_dir(notebook, {"seed": 1, "sizes": [1, 2]})
    assert other.parent == default.parent and other.name.startswith("seed=1-") and len(other.name) == len("seed=1-") + 8
    assert (default / "table.csv").is_file()
    assert results.results_dir(notebook, {"seed": 2, "sizes": [1, 2]}) != other
    assert results.results_dir(notebook, {"seed": 1, "sizes": [1, 2]}) == other  # same parameters, same folder


def test_a_rerun_replaces_the_folder_contents(notebook):
    first = results.results_dir(notebook, {"seed": 0, "sizes": [1, 2]})
    (first / "stale.csv").write_text("old")
    again = results.results_dir(notebook, {"seed": 0, "sizes": [1, 2]})
    assert again == first and not any(again.iterdir())


def test_run_names_are_short_and_filesystem_safe():
    name = results.run_name({"model": "google/ddpm-cifar10-32", "scales": [0.5] * 50}, {"model": "x", "scales": []})
    readable, digest = name.rsplit("-", 1)
    assert "/" not in name and " " not in name and len(readable) <= 40 and len(digest) == 8


def test_metadata_records_parameters_versions_and_files(notebook):
    folder = results.results_dir(notebook, {"seed": 0, "sizes": [1, 2]})
    results.save_table(pd.DataFrame({"a": [1, 2]}), folder, "table")
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    results.save_figure(figure, folder, "curve")
    plt.close(figure)
    results.write_metadata(folder, {"seed": 0, "sizes": [1, 2]}, seed=0, wall_time_s=1.234)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parameters"] == {"seed": 0, "sizes": [1, 2]} and metadata["wall_time_s"] == 1.2
    assert set(results.PACKAGES) <= set(metadata["packages"]) and metadata["packages"]["torch"]
    assert len(metadata["git"]["commit"] or "") in (0, 40)
    assert metadata["files"] == ["curve.png", "curve.svg", "table.csv"]
    assert metadata["library_digest"] == results.library_digest()


def test_library_digest_follows_every_source_line_and_package_version(tmp_path, monkeypatch):
    library = tmp_path / "diffprune_core"
    shutil.copytree(results.LIBRARY_DIR, library, ignore=shutil.ignore_patterns("__pycache__"))
    real = results.library_digest()
    monkeypatch.setattr(results, "LIBRARY_DIR", library)
    assert results.library_digest() == real
    with open(library / "criteria.py", "a") as file:
        file.write("# one changed line\n")
    changed = results.library_digest()
    assert changed != real
    versions = results.package_versions()
    monkeypatch.setattr(results, "package_versions", lambda: {**versions, "diffusers": "0.0.0"})
    assert results.library_digest() != changed


def test_library_imports_follow_every_form_of_import(tmp_path, monkeypatch):
    library = tmp_path / "diffprune_core"
    library.mkdir()
    sources = {"__init__": "", "a": "from .b import x\nfrom . import c\n",
               "b": "import os\n\ndef later():\n    import diffprune_core.d\n", "c": "from diffprune_core.e import y\n",
               "d": "", "e": "from .a import z\n", "unused": "from .a import x\n"}
    for name, text in sources.items():
        (library / f"{name}.py").write_text(text)
    monkeypatch.setattr(results, "LIBRARY_DIR", library)
    assert results.library_imports("a") == {"__init__", "a", "b", "c", "d", "e"}


def test_a_runs_digest_follows_the_code_it_runs_not_the_chapters_tables(tmp_path, monkeypatch):
    runs = results.library_imports("experiments")
    assert {"criteria", "pruner", "training", "sampling", "fid", "metrics", "ldpruner"} <= runs
    assert not {"figures", "tables", "verdicts", "cli", "paper"} & runs, "presentation is not part of a run's key"
    library = tmp_path / "diffprune_core"
    shutil.copytree(results.LIBRARY_DIR, library, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(results, "LIBRARY_DIR", library)
    before, whole = results.library_digest("experiments"), results.library_digest()
    with open(library / "verdicts.py", "a") as file:
        file.write("# a reworded sentence\n")
    assert results.library_digest("experiments") == before and results.library_digest() != whole
    with open(library / "training.py", "a") as file:
        file.write("# one changed line\n")
    assert results.library_digest("experiments") != before


def test_svg_figures_are_byte_for_byte_reproducible(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        figure, axes = plt.subplots()
        axes.plot([0, 1, 2], [1, 0, 1])
        results.save_figure(figure, tmp_path / folder, "f")
        plt.close(figure)
    assert (tmp_path / "a" / "f.svg").read_bytes() == (tmp_path / "b" / "f.svg").read_bytes()


def test_unknown_notebook_is_an_input_error(notebook):
    with pytest.raises(InputError, match="no notebook"):
        results.default_parameters("missing")


def test_paper_rows_filter_numbers_as_numbers_and_read_timestep_counts():
    table5 = paper.paper_rows(source="diff-pruning", table=5)
    assert table5["threshold"].tolist() == [0.0, 0.01, 0.02, 0.05, 0.1]
    assert table5["timesteps_used"].tolist() == [1000, 707, 433, 244, 127]
    assert len(paper.paper_rows(table=5, threshold=[0.05, 0.1])) == 2
    assert paper.paper_rows(table=3, method="diff-pruning")["timesteps_used"].tolist() == [534]
    with pytest.raises(InputError, match="no column"):
        paper.paper_rows(colour="red")


def test_paper_unet_numbers_match_the_configs_dense_numbers():
    from diffprune_core.architectures import paper_unet_configs

    for name, config in paper_unet_configs().items():
        numbers = paper.paper_unet_numbers(name)
        assert numbers["params_M"] == config["paper_dense"]["params_M"]
        assert numbers["macs_G"] == config["paper_dense"]["macs_G"]
        assert numbers["pruned_params_M"] < numbers["params_M"]


def test_build_profile_gives_each_run_to_the_chapter_that_computed_it(tmp_path):
    """A run finished inside a chapter's window counts there, phases in minutes; runs computed at once ('three' and
    'four') share out the minutes they cover together."""
    for chapter, finished, wall in (("03_a", "2026-12-03T10:10:00+0000", 600), ("05_b", "2026-12-03T10:30:00+0000", 1200)):
        (tmp_path / chapter / "default").mkdir(parents=True)
        (tmp_path / chapter / "default" / "metadata.json").write_text(
            json.dumps({"finished": finished, "wall_time_s": wall}))
    for name, finished in (("one", "2026-12-03T10:05:00+0000"), ("two", "2026-12-03T10:20:00+0000"),
                           ("three", "2026-12-03T10:29:00+0000"), ("four", "2026-12-03T10:29:00+0000")):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.json").write_text(json.dumps({"finished": finished, "wall_time_s": 84,
                                                                           "phases_s": {"pruning": 6, "fine_tuning": 60,
                                                                                        "sampling": 12, "measuring": 6}}))
    table = results.build_profile(root=tmp_path).set_index("chapter")
    assert list(table.runs) == [1, 3, 4]
    assert table.loc["05_b", "fine_tuning"] == pytest.approx(2.0) and table.loc["05_b", "other"] == pytest.approx(17.2)
    assert table.loc["03_a", "other"] == pytest.approx(8.6)
    assert table.loc["all", "wall"] == pytest.approx(30.0)


def test_provenance_without_results_says_to_run_the_chapters(tmp_path):
    with pytest.raises(InputError, match="run the chapters first"):
        results.provenance(root=tmp_path)


def test_provenance_lists_each_result_with_its_commit_digest_and_relative_parameters(notebook, tmp_path):
    for chapter, run in (("03_a", "default"), ("05_b", "default"), ("05_b", "seed=1-0a1b2c3d")):
        folder = tmp_path / "results" / chapter / run
        folder.mkdir(parents=True)
        results.write_metadata(folder, {"teacher": str(results.REPO_ROOT / "data" / "teacher"), "seed": 1},
                               seed=1, wall_time_s=60.0)
    table = results.provenance()
    assert list(table.chapter) == ["03_a", "05_b"] and set(table.run) == {"default"}
    assert len(results.provenance("*")) == 3
    row = table.iloc[0]
    assert row.parameters == '{"teacher": "data/teacher", "seed": 1}', "no absolute path of the build machine"
    assert row.library_digest == results.library_digest()[:12] and row.torch and row.wall_time_s == 60.0
    assert len(row.commit.removesuffix("+changes")) in (0, 10)
