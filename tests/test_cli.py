import json

import numpy as np
import pytest

from selfexpress.cli import main
from selfexpress.data import make_union_of_subspaces


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cluster", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("--dataset", "--method", "--input", "--n-clusters", "--output", "examples"):
        assert word in out


def test_cluster_file_writes_labels_and_metrics(tmp_path, capsys):
    X, y, _ = make_union_of_subspaces(3, 3, 10, 40, random_state=0)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    rc = main(["cluster", "--input", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
               "--method", "ensc", "--output", str(tmp_path / "out"), "-q"])
    assert rc == 0
    labels = np.load(tmp_path / "out" / "labels.npy")
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert labels.shape == (120,)
    assert record["metrics"]["acc"] >= 0.95
    assert "ACC" in capsys.readouterr().out


def test_ensc_restricted_mode_from_the_command_line(tmp_path, capsys):
    X, y, _ = make_union_of_subspaces(3, 3, 10, 40, random_state=0)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    rc = main(["cluster", "--input", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--method", "ensc",
               "--max-rounds", "0", "--support-size", "20", "--output", str(tmp_path / "out"), "-q"])
    assert rc == 0
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["params"]["max_rounds"] == 0 and record["params"]["support_size"] == 20
    assert record["metrics"]["acc"] >= 0.9
    capsys.readouterr()
    # an EnSC-only option given to another method is a clear error, not silently ignored
    assert main(["cluster", "--input", str(tmp_path / "X.npy"), "--n-clusters", "3", "--method", "ssc-omp",
                 "--max-rounds", "0", "-q"]) == 2
    assert "max_rounds" in capsys.readouterr().err


def test_cluster_csv_without_labels_needs_n_clusters(tmp_path, capsys):
    X, _, _ = make_union_of_subspaces(2, 2, 6, 20, random_state=1)
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    assert main(["cluster", "--input", str(tmp_path / "X.csv"), "--method", "ssc-omp", "-q"]) == 2
    assert "n_clusters is required" in capsys.readouterr().err
    assert main(["cluster", "--input", str(tmp_path / "X.csv"), "--n-clusters", "2", "--method", "ssc-omp",
                 "-q"]) == 0


@pytest.mark.parametrize("content, message", [
    ("1,2,3\n4,5\n", "line 2"),
    ("1,nan\n2,3\n3,4\n", "NaN"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    rc = main(["cluster", "--input", str(tmp_path / "bad.csv"), "--n-clusters", "2", "--method", "ensc", "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("selfexpress: error:") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2\n")
    with pytest.raises(ValueError):
        main(["--debug", "cluster", "--input", str(tmp_path / "bad.csv"), "--n-clusters", "2", "-q"])


def test_unknown_dataset_is_a_clear_error(capsys):
    assert main(["cluster", "--dataset", "no-such-set", "--method", "ensc", "-q"]) == 2
    assert "no-such-set" in capsys.readouterr().err
