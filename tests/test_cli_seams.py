"""CLI seams a newcomer hit (issue 24): files named for what they are not, CSV headers, `--plot` that draws
nothing, `selfexpress datasets` saying what is present."""

from __future__ import annotations

import numpy as np
import pytest

from selfexpress.cli import main
from selfexpress.data import dataset_missing_files, load_array, make_union_of_subspaces


def test_a_text_file_named_npy_is_called_a_text_file(tmp_path):
    (tmp_path / "X.npy").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"X.npy is not a .npy file: it is a text file \(first line '1,2'\); "
                                         "rename it .csv"):
        load_array(tmp_path / "X.npy")


@pytest.mark.parametrize("payload, what", [(b"\x80\x04K\x01.", "Python pickle"), (b"PK\x03\x04", "zip archive"),
                                           (b"", "empty")])
def test_other_files_named_npy_say_what_they_are(tmp_path, payload, what):
    (tmp_path / "X.npy").write_bytes(payload)
    with pytest.raises(ValueError, match=what):
        load_array(tmp_path / "X.npy")


def test_csv_header_gets_a_hint_and_skip_header_reads_it(tmp_path, capsys):
    X, _, _ = make_union_of_subspaces(2, 2, 6, 20, random_state=1)
    path = tmp_path / "X.csv"
    np.savetxt(path, X, delimiter=",", header="a,b,c,d,e,f", comments="")
    with pytest.raises(ValueError, match=r"the first line looks like a header \('a,b,c,d,e,f'\).*--skip-header"):
        load_array(path)
    np.testing.assert_allclose(load_array(path, skiprows=1), X, rtol=1e-6)
    assert main(["cluster", "--input", str(path), "--n-clusters", "2", "--method", "ssc-omp", "-q"]) == 2
    assert "--skip-header" in capsys.readouterr().err
    assert main(["cluster", "--input", str(path), "--n-clusters", "2", "--method", "ssc-omp", "-q",
                 "--skip-header"]) == 0
    assert "ssc-omp on " in capsys.readouterr().out


def test_plot_says_when_it_writes_nothing(tmp_path, capsys):
    rc = main(["cluster", "--method", "kmeans", "--plot", "--output", str(tmp_path), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "--plot: method 'kmeans' has no coefficient matrix C" in out
    assert not (tmp_path / "coefficients.png").exists()


def test_datasets_says_which_are_present(tmp_path, capsys):
    (tmp_path / "mnist").mkdir()
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / "mnist" / f).write_bytes(b"")
    assert dataset_missing_files("mnist-test", tmp_path) == []
    assert dataset_missing_files("mnist-train", tmp_path) == ["train-images-idx3-ubyte.gz",
                                                              "train-labels-idx1-ubyte.gz"]
    assert dataset_missing_files("digits", tmp_path) == []
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.startswith("  ")}
    assert lines["mnist-test"].split()[1] == "yes"
    assert lines["mnist-train"].split()[1] == "no" and "missing train-images-idx3-ubyte.gz" in lines["mnist-train"]
    assert lines["synthetic"].split()[1] == "yes" and lines["digits"].split()[1] == "yes"


def test_help_names_every_method(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("SENet", "EnSC", "SSC-OMP", "NCSC", "SSCN", "DSC-Net", "LDRSC"):
        assert name in out
    with pytest.raises(SystemExit):
        main(["cluster", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "save the fitted model (SENet)" not in out and "(checked before the run)" in out
