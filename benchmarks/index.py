"""Write benchmarks/results/INDEX.md: every record with its script, commit and key figure (generated; do not edit).

Layout: ``benchmarks/results/<script>/<tag>.json`` is a record written by ``benchmarks/<script>.py`` from committed
code (``write_result`` in ``_common.py`` refuses anything else); ``<script>/legacy/<tag>.json`` is a record written
before that rule from uncommitted code (commit ``<sha>-dirty``: the code differed from ``<sha>`` when it ran), kept as
evidence in a separate section of the index but not reproducible exactly.

``python benchmarks/index.py`` rewrites the index; ``--check`` exits 1, saying why, when the index is out of date, a
record lies outside a script folder, a record outside ``legacy/`` is dirty, or a record names a commit that is not in
the history.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
INDEX = RESULTS / "INDEX.md"

#: the folder of records written from uncommitted code, inside a script's folder
LEGACY = "legacy"

#: keys whose value is the record's headline figure, by preference
KEY_NAMES = ("acc", "test_acc", "ensc_acc_percent", "senet_acc", "ari", "seconds", "loglog_slope")


def _find(obj, path=()):
    """``(path, value)`` of numeric leaves, depth first, dicts in key order and lists by index."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("machine", "params", "args", "paper", "paper_percent", "history_eval", "eval", "provenance",
                     "poster"):
                continue
            yield from _find(v, (*path, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:50]):
            yield from _find(v, (*path, str(i)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _acc_row(rows, who):
    return " / ".join(f"{_fmt(r[who]['ACC'])}" for r in rows.values() if isinstance(r, dict) and who in r)


#: script -> the record's headline figure (ours, not the paper's), where the generic search would pick a wrong one
FIGURES = {
    "sscn.py": lambda r: " ".join(f"{k} ACC {_fmt(r[k]['fit']['acc'])}" for k in ("sscn", "dscnet")
                                  if isinstance(r.get(k), dict) and "fit" in r[k]),
    "ensc_speed.py": lambda r: (f"ACC {_fmt(r['affinities'][r.get('best_affinity', 'knn')]['acc'])} "
                                f"({r.get('best_affinity', 'knn')} graph)") if "affinities" in r else None,
    "synthetic_baselines.py": lambda r: ("ACC (symmetric) by N_i: " + " / ".join(
        _fmt(row["mean"]["acc_symmetric"]) for row in r["rows"])) if r.get("rows") else None,
    "senet_table1.py": lambda r: (f"SENet train ACC by N_i: {_acc_row(r['rows'], 'SENet')}; test: "
                                  f"{_acc_row(r['rows'], 'SENet test')}") if isinstance(r.get("rows"), dict) else None,
    "senet_table1_ablation.py": lambda r: (f"final train ACC {_fmt(r['eval']['acc'][-1])}, test ACC "
                                           f"{_fmt(r['eval']['test_acc'][-1])} after {int(r['eval']['iter'][-1])} it.")
    if r.get("eval", {}).get("test_acc") else None,
    "table1_draws.py": lambda r: (f"EnSC ACC {r['ensc_acc_percent']['ours']['mean']} +- "
                                  f"{r['ensc_acc_percent']['ours']['std']} % over {r.get('draws')} draws"),
    "senet_fig2.py": lambda r: (f"train ACC {_fmt(r['results']['train_acc'])}, test ACC (spectral) "
                                f"{_fmt(r['results']['test_acc_spectral'])}"),
    "senet_speed.py": lambda r: "it/s " + ", ".join(f"{k} {_fmt(v)}" for k, v in r["summary"]["it_per_s"].items()),
    "table2.py": lambda r: "ACC " + ", ".join(
        f"{row.get('method', 'senet')}{'' if row.get('n_train') is None else ' N=' + str(row['n_train'])} "
        f"{_fmt(row['metrics']['acc'])}" for row in r["rows"]),
    "inductive_cli.py": lambda r: (f"fit ACC {_fmt(r['fit_acc'])}, predict ACC (raw images) "
                                   f"{_fmt(r['predict_acc_raw_images'])}"),
    "ensc_fast.py": lambda r: ("best seconds " + ", ".join(f"{k} {_fmt(v)}" for k, v in r["best_seconds"].items()))
    if "best_seconds" in r else None,
    "scale.py": lambda r: ("ACC / total seconds by N: " + ", ".join(
        f"{row['n_samples']:,}: {_fmt(row['acc'])} / {_fmt(row.get('total_seconds', 0.0))}" for row in r["rows"]))
    if r.get("rows") else None,
}


def key_figure(record, script="?"):
    """The record's headline figure: :data:`FIGURES` for its script, else the first ``acc``-like number."""
    try:
        fig = FIGURES.get(script, lambda r: None)(record)
    except (KeyError, TypeError, IndexError, AttributeError):
        fig = None
    if fig:
        return fig
    leaves = list(_find(record))
    for key in KEY_NAMES:
        for path, value in leaves:
            if path and path[-1].lower() == key:
                return f"{'.'.join(path)} = {_fmt(value)}"
    return "(no headline figure found)"


def commit_exists(sha):
    return bool(sha) and subprocess.call(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=REPO,
                                         stderr=subprocess.DEVNULL) == 0


def nested_commits(obj):
    """The ``commit`` values of the records a summary record embeds (its ``rows`` etc.), at any depth below the top."""
    found = []
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
    for child in children:
        if isinstance(child, dict) and isinstance(child.get("commit"), str):
            found.append(child["commit"])
        found.extend(nested_commits(child))
    return found


def rows(results=RESULTS):
    """One dict per record under ``results``: name (path without ``.json``), script, commit, base commit, whether
    it is a legacy record, whether its commit exists, whether it is dirty, date, key figure and ``problems`` (why
    ``--check`` fails)."""
    results = Path(results)
    out = []
    for path in sorted(results.rglob("*.json")):
        rel = path.relative_to(results)
        name = rel.with_suffix("").as_posix()
        folders = rel.parts[:-1]
        legacy = len(folders) == 2 and folders[1] == LEGACY
        script = f"{folders[0]}.py" if folders else "?"
        problems = []
        if not folders or (len(folders) > 1 and not legacy):
            problems.append("not in the layout <script>/<tag>.json or <script>/legacy/<tag>.json")
        elif not (REPO / "benchmarks" / script).is_file():
            problems.append(f"folder {folders[0]!r} names no script benchmarks/{script}")
        try:
            record = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            out.append(dict(name=name, script=script, commit="?", base="?", legacy=legacy, exists=False, dirty=False,
                            date="", figure=f"unreadable: {exc}", problems=[*problems, f"unreadable: {exc}"]))
            continue
        if not isinstance(record, dict):
            record = {}
        commit = str(record.get("commit", ""))
        base = commit.removesuffix("-dirty")
        # a summary built from records of uncommitted code is as dirty as they are, whatever its own commit says
        dirty_rows = [c for c in nested_commits(record) if c.endswith("-dirty")]
        dirty = commit.endswith("-dirty") or bool(dirty_rows)
        exists = commit_exists(base)
        if record.get("script") and record["script"] != script and folders:
            problems.append(f"says script {record['script']!r} but lies in the folder of {script!r}")
        if dirty and not legacy:
            source = commit if commit.endswith("-dirty") else f"{commit}, embedding records from {dirty_rows[0]}"
            problems.append(f"written from uncommitted code ({source}) but not in a {LEGACY}/ folder")
        if not exists:
            problems.append(f"its commit {base or '(none)'!r} is not in the history")
        out.append(dict(name=name, script=script, commit=commit or "(none)", base=base or "(none)", legacy=legacy,
                        exists=exists, dirty=dirty, date=str(record.get("date", ""))[:10],
                        figure=key_figure(record, script), problems=problems))
    return out


def _row(r, commit):
    return f"| [{r['name']}]({r['name']}.json) | `{r['script']}` | `{commit}` | {r['date']} | {r['figure']} |"


def render(table):
    current = [r for r in table if not r["legacy"]]
    legacy = [r for r in table if r["legacy"]]
    bad = [r["name"] for r in table if r["problems"]]
    lines = [
        "# Benchmark records",
        "",
        "Generated by `python benchmarks/index.py` from the JSON records under this folder; do not edit by hand.",
        "",
        "`<script>/<tag>.json` is a record written by `benchmarks/<script>.py` from committed code (`write_result` "
        "in `benchmarks/_common.py` refuses uncommitted code); `<script>/legacy/<tag>.json` is an older record written "
        "from uncommitted code. `python benchmarks/index.py --check` fails when this index is stale, a record outside "
        "`legacy/` is dirty or a record names a commit that is not in the history.",
        "",
        f"{len(table)} records: {len(current)} from committed code, {len(legacy)} legacy. "
        + ("Every named commit exists in the history." if not bad else
           "**Problems** (see `--check`): " + ", ".join(bad) + "."),
        "",
        "| record | script | commit | date | key figure |",
        "|---|---|---|---|---|",
    ]
    lines += [_row(r, r["commit"]) + (" **" + "; ".join(r["problems"]) + "**" if r["problems"] else "")
              for r in current]
    if legacy:
        lines += [
            "",
            "## Legacy records from uncommitted code (not reproducible exactly)",
            "",
            "Written before the harness refused uncommitted code: the code differed from the base commit when they "
            "ran (their `commit` field says `<base>-dirty`). Kept as evidence; a figure from one of them is "
            "confirmed only by re-running its script from committed code.",
            "",
            "| record | script | base commit | date | key figure |",
            "|---|---|---|---|---|",
        ]
        lines += [_row(r, r["base"]) + (" **" + "; ".join(r["problems"]) + "**" if r["problems"] else "")
                  for r in legacy]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the index is stale, a record is misplaced or dirty outside legacy/, or a commit "
                         "is missing")
    ap.add_argument("--results-dir", default=str(RESULTS), help="the records' folder (default: benchmarks/results)")
    a = ap.parse_args(argv)
    results = Path(a.results_dir)
    index = results / INDEX.name
    table = rows(results)
    text = render(table)
    if a.check:
        failed = False
        for r in table:
            for problem in r["problems"]:
                print(f"{r['name']}.json: {problem}", file=sys.stderr)
                failed = True
        if not index.is_file() or index.read_text("utf-8") != text:
            print(f"{index} is out of date: run python benchmarks/index.py", file=sys.stderr)
            failed = True
        if not failed:
            print(f"{index}: {len(table)} records, all current")
        return 1 if failed else 0
    index.write_text(text, encoding="utf-8")
    print(f"wrote {index} ({len(table)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
