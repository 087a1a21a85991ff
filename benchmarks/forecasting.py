"""Does the default ``jlstm train`` hold up on real series? Evidence for the defaults.

Runs ``jlstm train --data FILE --target COL`` exactly as a user would (one
subprocess per series, default options unless ``--extra`` adds some) over real
public series that ship inside PyPI packages, and compares each model's test RMSE
with the best naive baseline (persistence or seasonal naive) on the same targets.

Series (none of them is in jlstm's own datasets):

* ``dev``: the set the ``auto`` transform rule was designed on: the 12 quarterly US
  macro series of statsmodels' ``macrodata`` (1959-2009) and the monthly Nino 1+2
  sea surface temperature of statsmodels' ``elnino`` (1950-2010).
* ``held-out``: never looked at while designing the rule: quarterly Australian
  residents, beer and wool production and monthly wine sales (pmdarima), Danish money
  demand series and German inflation/interest (statsmodels), euro-area electrical
  equipment orders (statsmodels), UK road casualties and shampoo sales (sktime), US
  consumption growth (sktime; stationary), lynx trappings (sktime; cyclic), and the
  fertility rates of four countries (statsmodels, World Bank).
* ``builtin``: jlstm's own single-series datasets with their curated preprocessing
  (``--dataset NAME``): they must keep their results. (``us_real_gdp_quarterly`` and
  ``elnino_nino12_monthly`` are the dev set's ``realgdp`` and ``elnino``, shipped.)

Data come from ``statsmodels`` (installed: ``pip install statsmodels``) and from the
``pmdarima`` and ``sktime`` wheels, downloaded once with ``pip download --no-deps``
into ``benchmarks/.cache`` (git-ignored) and read from the zip files; nothing is
installed from them.

    python benchmarks/forecasting.py                    # all groups, default flags
    python benchmarks/forecasting.py --groups dev --extra "--transform delta"
    python benchmarks/forecasting.py --jobs 2 --series realgdp,cpi

A whole default run (all groups, no ``--series``, no ``--extra``) writes
``benchmarks/results/forecasting.{md,json}``; any other run writes to
``benchmarks/results/scratch/`` so it never replaces the published numbers.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import csv
import datetime
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "benchmarks", ".cache")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
WHEELS = {"pmdarima": "pmdarima==2.1.1", "sktime": "sktime==1.2.0"}
GROUPS = ("dev", "held-out", "builtin")
BUILTINS = (
    "airline_passengers",
    "co2_mauna_loa_weekly",
    "sunspots_yearly",
    "nile",
    "us_real_gdp_quarterly",
    "elnino_nino12_monthly",
)
MACRO = "realgdp realcons realinv realgovt realdpi cpi m1 tbilrate unemp pop infl realint".split()
WITHIN = 1.1


# -- the series --------------------------------------------------------------------------------


def _write_csv(path: str, dates: list[str], columns: dict[str, np.ndarray]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", *columns])
    for i, d in enumerate(dates):
        writer.writerow([d, *(repr(float(v[i])) for v in columns.values())])
    with open(path, "w", encoding="utf-8") as f:
        f.write(out.getvalue())


def _quarters(year: int, quarter: int, n: int) -> list[str]:
    out = []
    for i in range(n):
        q = quarter - 1 + i
        out.append(f"{year + q // 4}-{3 * (q % 4) + 1:02d}")
    return out


def _months(year: int, month: int, n: int) -> list[str]:
    return [f"{year + (month - 1 + i) // 12}-{(month - 1 + i) % 12 + 1:02d}" for i in range(n)]


def _wheel(name: str) -> str:
    os.makedirs(CACHE, exist_ok=True)
    found = [f for f in os.listdir(CACHE) if f.startswith(name + "-") and f.endswith(".whl")]
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", CACHE, WHEELS[name]],
            check=True,
        )
        found = [f for f in os.listdir(CACHE) if f.startswith(name + "-") and f.endswith(".whl")]
    return os.path.join(CACHE, sorted(found)[-1])


def _pmdarima_array(member: str) -> np.ndarray:
    """The data array written out in a pmdarima dataset module (its longest number list)."""
    with zipfile.ZipFile(_wheel("pmdarima")) as z:
        tree = ast.parse(z.read(f"pmdarima/datasets/{member}.py").decode())
    best: list = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and len(node.elts) > len(best):
            try:
                values = ast.literal_eval(node)
            except ValueError:
                continue
            while values and values[-1] is None:  # ausbeer ends with a missing quarter
                values = values[:-1]
            if all(isinstance(v, int | float) for v in values):
                best = values
    return np.asarray(best, np.float64)


def _sktime_csv(member: str) -> list[list[str]]:
    with zipfile.ZipFile(_wheel("sktime")) as z:
        text = z.read(f"sktime/datasets/data/{member}").decode()
    return list(csv.reader(io.StringIO(text)))


def _statsmodels_csv(name: str, file: str) -> list[list[str]]:
    import statsmodels.datasets

    base = os.path.dirname(statsmodels.datasets.__file__)
    with open(os.path.join(base, name, file), encoding="utf-8-sig") as f:
        return list(csv.reader(f))


def prepare(folder: str, groups: tuple[str, ...]) -> list[dict]:
    """Write each series of ``groups`` as a CSV in ``folder``; a list of run specs."""
    specs = []

    def add(group, name, dates, values, source, kind="own"):
        path = os.path.join(folder, f"{name}.csv")
        _write_csv(path, dates, {name: np.asarray(values, np.float64)})
        specs.append({"group": group, "series": name, "file": path, "source": source})

    if "dev" in groups:
        rows = _statsmodels_csv("macrodata", "macrodata.csv")
        head, body = rows[0], rows[1:]
        dates = _quarters(int(float(body[0][0])), int(float(body[0][1])), len(body))
        for col in MACRO:
            k = head.index(col)
            add("dev", col, dates, [float(r[k]) for r in body], "statsmodels macrodata")
        rows = _statsmodels_csv("elnino", "elnino.csv")
        values = [float(v) for r in rows[1:] for v in r[1:]]
        add(
            "dev",
            "elnino",
            _months(int(float(rows[1][0])), 1, len(values)),
            values,
            "statsmodels elnino (Nino 1+2 SST, monthly)",
        )
    if "held-out" in groups:
        for member, start, kind in (
            ("austres", (1971, 1), "q"),
            ("ausbeer", (1956, 1), "q"),
            ("woolyrnq", (1965, 1), "q"),
            ("wineind", (1980, 1), "m"),
        ):
            values = _pmdarima_array(member)
            dates = (_quarters if kind == "q" else _months)(*start, len(values))
            add("held-out", member, dates, values, f"pmdarima {member}")
        rows = _statsmodels_csv("danish_data", "data.csv")
        head, body = rows[0], rows[1:]
        dates = _quarters(1974, 1, len(body))
        for col in ("lrm", "lry", "lpy"):
            k = head.index(col)
            add(
                "held-out",
                f"danish_{col}",
                dates,
                [float(r[k]) for r in body],
                "statsmodels danish_data",
            )
        rows = _statsmodels_csv("interest_inflation", "E6.csv")
        head, body = rows[0], rows[1:]
        dates = _quarters(int(body[0][0]), int(body[0][1]), len(body))
        for col in ("Dp", "R"):
            k = head.index(col)
            add(
                "held-out",
                f"e6_{col}",
                dates,
                [float(r[k]) for r in body],
                "statsmodels interest_inflation",
            )
        rows = _statsmodels_csv("elec_equip", "elec_equip.csv")
        values = [float(r[1]) for r in rows[1:]]
        add(
            "held-out",
            "elec_equip",
            _months(1995, 1, len(values)),
            values,
            "statsmodels elec_equip",
        )
        rows = _sktime_csv("seatbelts/seatbelts.csv")
        values = [float(r[1]) for r in rows[1:]]
        add("held-out", "seatbelts_ksi", _months(1969, 1, len(values)), values, "sktime seatbelts")
        rows = _sktime_csv("ShampooSales/ShampooSales.csv")
        values = [float(r[1]) for r in rows[1:]]
        add("held-out", "shampoo", _months(1991, 1, len(values)), values, "sktime ShampooSales")
        rows = _sktime_csv("Uschange/Uschange.csv")
        k = rows[0].index("Consumption")
        values = [float(r[k]) for r in rows[1:]]
        add(
            "held-out",
            "uschange_consumption",
            _quarters(1970, 1, len(values)),
            values,
            "sktime Uschange",
        )
        rows = _sktime_csv("Lynx/Lynx.csv")
        values = [float(r[1]) for r in rows[1:]]
        add("held-out", "lynx", [str(1821 + i) for i in range(len(values))], values, "sktime Lynx")
        rows = _statsmodels_csv("fertility", "fertility.csv")
        head = rows[0]
        years = [i for i, h in enumerate(head) if h.isdigit()]
        for code in ("USA", "IND", "BRA", "KOR"):
            row = next(r for r in rows[1:] if r[1] == code)
            pairs = [(head[i], float(row[i])) for i in years if row[i].strip()]
            add(
                "held-out",
                f"fertility_{code}",
                [p[0] for p in pairs],
                [p[1] for p in pairs],
                "statsmodels fertility (World Bank)",
            )
    if "builtin" in groups:
        for name in BUILTINS:
            specs.append(
                {"group": "builtin", "series": name, "dataset": name, "source": "jlstm built-in"}
            )
    return specs


# -- running -----------------------------------------------------------------------------------


def run_one(spec: dict, extra: list[str], workdir: str) -> dict:
    out = os.path.join(workdir, "runs", spec["series"])
    cmd = [sys.executable, "-m", "jlstm.cli", "train", "--out", out, "--quiet", "--no-plot"]
    if "dataset" in spec:
        cmd += ["--dataset", spec["dataset"]]
    else:
        cmd += ["--data", spec["file"], "--target", spec["series"]]
    cmd += extra
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row = dict(spec, seconds=round(time.perf_counter() - started, 1), exit=proc.returncode)
    row.pop("file", None)
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return row
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        report = json.load(f)
    with open(os.path.join(out, "checkpoint", "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    features = config["meta"]["pipeline"]["features"]
    row |= {
        "rows": report["split"]["test"]["rows"][1],
        "season": report["season"],
        "steps": features["steps"],
        "transform": report["transform"]["transform"],
        "auto": report["transform"].get("requested") == "auto",
        "reason": report["transform"].get("reason", "given"),
        "warning": any(line.startswith("warning:") for line in proc.stderr.splitlines()),
    }
    for split in ("test", "val"):
        s = report[split]
        best_name = min(("naive", "seasonal_naive"), key=lambda b: s[b]["rmse"])
        if report["season"] == 1:
            best_name = "naive"
        best = s[best_name]["rmse"]
        row[split] = {
            "model": s["model"]["rmse"],
            "naive": s["naive"]["rmse"],
            "seasonal_naive": s["seasonal_naive"]["rmse"],
            "best": best_name,
            "ratio": s["model"]["rmse"] / best,
        }
    return row


def summarise(rows: list[dict]) -> dict[str, dict[str, int]]:
    out = {}
    for group in GROUPS:
        done = [r for r in rows if r["group"] == group and "test" in r]
        if not any(r["group"] == group for r in rows):
            continue
        out[group] = {
            "series": sum(r["group"] == group for r in rows),
            "within_1.1x": sum(r["test"]["ratio"] <= WITHIN for r in done),
            "beats": sum(r["test"]["ratio"] < 1.0 for r in done),
            "failed": sum(r["group"] == group and "test" not in r for r in rows),
        }
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Default `jlstm train` on real series",
        "",
        f"Written by `benchmarks/forecasting.py` on {meta['date']} ({meta['command']}); "
        f"flags added to every run: `{' '.join(meta['extra']) or 'none'}`. One seed (0) per "
        "series; test RMSE in the series' units; *best naive* is the lower test RMSE of "
        "persistence and seasonal naive (persistence alone for yearly data); *ratio* = model / "
        "best naive (below 1: the model wins).",
        "",
    ]
    summary = summarise(rows)
    lines += [
        "| group | series | within 1.1x of best naive | beats best naive | failed |",
        "|---|---|---|---|---|",
    ]
    for group, s in summary.items():
        lines.append(
            f"| {group} | {s['series']} | {s['within_1.1x']} | {s['beats']} | {s['failed']} |"
        )
    for group in summary:
        lines += [
            "",
            f"## {group}",
            "",
            "| series | rows | season | steps | transform | model | persistence | "
            "seasonal naive | ratio | val ratio | warned |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["group"] != group:
                continue
            if "test" not in r:
                lines.append(f"| {r['series']} | failed: {r.get('error', '?')} |")
                continue
            t, v = r["test"], r["val"]
            sn = "" if r["season"] == 1 else f"{t['seasonal_naive']:.4g}"
            mark = "**" if t["ratio"] < 1 else ""
            lines.append(
                f"| {r['series']} | {r['rows']} | {r['season']} | {r['steps']} | "
                f"{r['transform']}{'' if r['auto'] else ' (given)'} | {t['model']:.4g} | "
                f"{t['naive']:.4g} | {sn} | {mark}{t['ratio']:.3f}{mark} | {v['ratio']:.3f} | "
                f"{'yes' if r['warning'] else ''} |"
            )
    lines += ["", "Why each transform was chosen (the `auto` line each run printed):", ""]
    for r in rows:
        if r.get("auto"):
            lines.append(f"- {r['series']}: {r['reason']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default=",".join(GROUPS), help="dev, held-out, builtin")
    parser.add_argument("--series", default="", help="comma-separated names (a filter)")
    parser.add_argument("--extra", default="", help="flags added to every `jlstm train`")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--out", default=None, help="results folder (default: see above)")
    parser.add_argument(
        "--combine",
        default="",
        help="comma-separated .json files of earlier runs with the same --extra flags whose "
        "groups together make a whole run (e.g. dev, then held-out,builtin): write their "
        "rows as one result, in benchmarks/results/ when they cover every group; a later "
        "file's row replaces an earlier one's of the same series (kept under replaced_rows); "
        "runs nothing",
    )
    args = parser.parse_args(argv)
    if args.combine:
        return _combine(args.combine.split(","), args.out)
    groups = tuple(g for g in args.groups.split(",") if g)
    bad = set(groups) - set(GROUPS)
    if bad:
        parser.error(f"unknown groups {sorted(bad)}; use {', '.join(GROUPS)}")
    extra = shlex.split(args.extra)
    names = {s for s in args.series.split(",") if s}
    whole = set(groups) == set(GROUPS) and not names and not extra
    out = args.out or (RESULTS if whole else os.path.join(RESULTS, "scratch"))
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "runs"))
        specs = prepare(work, groups)
        if names:
            specs = [s for s in specs if s["series"] in names]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_one, s, extra, work) for s in specs]
            rows = []
            for spec, fut in zip(specs, futures, strict=True):
                row = fut.result()
                rows.append(row)
                t = row.get("test")
                print(
                    f"{row['group']:>8} {spec['series']:<22} "
                    + (f"{row['transform']:<10} ratio {t['ratio']:.3f}" if t else row["error"]),
                    flush=True,
                )
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/forecasting.py " + " ".join(argv or sys.argv[1:]),
        "extra": extra,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "wall_seconds": round(time.time() - started, 1),
    }
    stem = "forecasting"
    if not whole and args.out is None:  # scratch runs of different flags sit side by side
        tag = "-".join([*groups, *extra]).replace("--", "").replace(" ", "")
        stem += "-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
    _write(out, stem, rows, meta)
    return 0


def _combine(paths: list[str], out: str | None) -> int:
    parts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            parts.append(json.load(f))
    extras = {tuple(p["meta"]["extra"]) for p in parts}
    if len(extras) != 1:
        raise SystemExit(f"--combine: the runs added different flags {sorted(extras)}")
    # A later run replaces an earlier one's row of the same series (a rerun after a change
    # of the code that affects only those series); the replaced rows stay in the JSON.
    by_name: dict[tuple[str, str], dict] = {}
    replaced = []
    for p in parts:
        for row in p["rows"]:
            key = (row["group"], row["series"])
            if key in by_name:
                replaced.append(by_name[key])
            by_name[key] = row
    rows = list(by_name.values())
    groups = {row["group"] for row in rows}
    whole = groups == set(GROUPS) and not extras.pop()
    rows.sort(key=lambda r: GROUPS.index(r["group"]))
    meta = dict(parts[-1]["meta"])
    meta["command"] = "; ".join(p["meta"]["command"] for p in parts) + " (combined)"
    meta["combined"] = [p["meta"] for p in parts]
    meta["wall_seconds"] = round(sum(p["meta"]["wall_seconds"] for p in parts), 1)
    meta["replaced_rows"] = replaced
    _write(
        out or (RESULTS if whole else os.path.join(RESULTS, "scratch")), "forecasting", rows, meta
    )
    return 0


def _write(out: str, stem: str, rows: list[dict], meta: dict) -> None:
    os.makedirs(out, exist_ok=True)
    text = markdown(rows, meta)
    for name, content in (
        (f"{stem}.md", text),
        (
            f"{stem}.json",
            json.dumps({"meta": meta, "summary": summarise(rows), "rows": rows}, indent=1) + "\n",
        ),
    ):
        path = os.path.join(out, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(content)
        os.replace(path + ".tmp", path)
    print(text)
    print(f"wrote {out}/{stem}.md and .json")


if __name__ == "__main__":
    sys.exit(main())
