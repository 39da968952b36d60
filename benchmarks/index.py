"""Write benchmarks/results/INDEX.md: every record with its script, commit and key figure (generated; do not edit).

``python benchmarks/index.py`` rewrites the index; ``--check`` exits 1 when it is out of date or when a record names
a commit that is not in the history. A record from uncommitted code (commit ``<sha>-dirty``: the code differed from
``<sha>`` when it ran) is flagged; such records are kept as evidence but cannot be reproduced exactly.
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

#: record-name prefix -> producing script, for records written before records named their script (longest first)
PRODUCERS = [
    ("senet_table1_ablation_", "senet_table1_ablation.py"), ("senet_table1", "senet_table1.py"),
    ("senet_table2_", "table2.py"), ("senet_full_", "senet_real.py"), ("senet_fig2", "senet_fig2.py"),
    ("senet_speed", "senet_speed.py"), ("ensc_speed_", "ensc_speed.py"), ("ensc_fast_", "ensc_fast.py"),
    ("ensc_10k", "synthetic_baselines.py"), ("ensc_digits", "synthetic_baselines.py"),
    ("ensc_table1", "synthetic_baselines.py"), ("synthetic_r15", "synthetic_baselines.py"),
    ("table1_ni20_draws", "table1_draws.py"), ("table2_", "table2.py"), ("table3_", "table3.py"),
    ("energy_", "energy.py"), ("ncsc_", "ncsc.py"), ("sscn_", "sscn.py"), ("scale", "scale.py"),
    ("inductive_cli", "inductive_cli.py"),
]
#: keys whose value is the record's headline figure, by preference
KEY_NAMES = ("acc", "test_acc", "ensc_acc_percent", "senet_acc", "ari", "seconds", "loglog_slope")


def producer(name, record):
    script = record.get("script") if isinstance(record, dict) else None
    if script:
        return script
    for prefix, script in PRODUCERS:
        if name.startswith(prefix):
            return script
    return "?"


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
    "senet_speed.py": lambda r: None,
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


def rows():
    out = []
    for path in sorted(RESULTS.rglob("*.json")):
        name = path.relative_to(RESULTS).with_suffix("").as_posix()
        try:
            record = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            out.append(dict(name=name, script="?", commit="?", exists=False, dirty=False, date="",
                            figure=f"unreadable: {exc}"))
            continue
        commit = str(record.get("commit", "")) if isinstance(record, dict) else ""
        base = commit.removesuffix("-dirty")
        script = producer(path.stem, record)
        out.append(dict(name=name, script=script, commit=commit or "(none)",
                        exists=commit_exists(base), dirty=commit.endswith("-dirty"),
                        date=str(record.get("date", ""))[:10] if isinstance(record, dict) else "",
                        figure=key_figure(record, script)))
    return out


def render(table):
    n_dirty = sum(r["dirty"] for r in table)
    missing = [r["name"] for r in table if not r["exists"]]
    lines = [
        "# Benchmark records",
        "",
        "Generated by `python benchmarks/index.py` from the JSON records in this folder; do not edit by hand.",
        "",
        f"{len(table)} records; {n_dirty} were written from uncommitted code (commit `<sha>-dirty`: the code "
        "differed from `<sha>` when they ran; flagged **dirty** below, kept as evidence but not reproducible "
        "exactly). Every named commit exists in the history" + (" except: " + ", ".join(missing) if missing else "")
        + ". Since issue 24 `benchmarks/_common.py` refuses to write a record from uncommitted code.",
        "",
        "| record | script | commit | date | key figure |",
        "|---|---|---|---|---|",
    ]
    for r in table:
        flag = " **dirty**" if r["dirty"] else ""
        flag += "" if r["exists"] else " **not in history**"
        lines.append(f"| [{r['name']}]({r['name']}.json) | `{r['script']}` | `{r['commit']}`{flag} | {r['date']} | "
                     f"{r['figure']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if INDEX.md is stale or a commit is missing")
    a = ap.parse_args(argv)
    table = rows()
    text = render(table)
    if a.check:
        stale = not INDEX.is_file() or INDEX.read_text("utf-8") != text
        missing = [r["name"] for r in table if not r["exists"]]
        if stale:
            print(f"{INDEX} is out of date: run python benchmarks/index.py", file=sys.stderr)
        if missing:
            print(f"records naming a commit not in the history: {missing}", file=sys.stderr)
        return 1 if stale or missing else 0
    INDEX.write_text(text, encoding="utf-8")
    print(f"wrote {INDEX} ({len(table)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
