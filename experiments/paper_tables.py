"""The paper's tables with our numbers beside the paper's: one markdown table per table (Tab. 1, 2, 3, 5, 7, 8).

Each reported row of ours is a config, `experiments/paper_tables/table<N>.py:<row>` (see rows.py there):
the paper's numbers as printed, the model config and released checkpoint, and the `ldm-jax evaluate`
settings (sampler, steps, eta, guidance, sample count, reference data, metrics). This script

  * renders the tables, "ours" beside "paper", with a Settings column and, per table, the exact
    `ldm-jax evaluate` command of every row that can be measured (run them on an accelerator with
    the released checkpoints; the data and weight paths are placeholders, described under the table);
  * `--results DIR`: fills "ours" from DIR/<table>_<row>/results.json (and <table>_<row>-<run> for a
    row's extra runs), which those commands write with `--out DIR/<table>_<row>`;
  * `--run-toy --work DIR`: trains the toy models on the built-in shapes (paper_tables/toy.py) into
    DIR/toy_<size>/, runs the toy rows' printed commands (through the `ldm-jax evaluate` CLI, on the
    CPU) into DIR/<table>_<row>/ and fills them.

    python experiments/paper_tables.py                                  # every table, commands included
    python experiments/paper_tables.py --tables 1,3,8 --results /results --out tables.md
    python experiments/paper_tables.py --tables 3,8 --run-toy --work /tmp/tables --out /tmp/tables/tables.md
    python experiments/paper_tables.py --run-toy --toy-size smoke --work /tmp/smoke   # 2 training steps
"""
import argparse
import dataclasses
import json
import pathlib
import re
import shlex
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
TABLES_DIR = REPO / "experiments" / "paper_tables"
TABLE_NUMBERS = (1, 2, 3, 5, 7, 8)
RESULTS_FILE = "results.json"
DEFAULT_RESULTS = "results"   # the --out parent printed in commands when --results is not given
# Settings that only decide how samples are drawn: not flags of a run that scores images made elsewhere.
SAMPLING_FIELDS = ("sampler", "steps", "eta", "guidance_scale", "seed", "prompts", "tokenizer")
MISSING, NOT_MEASURED = "—", "n/a"


# ----------------------------------------------------------------------------------------------
# Tables and rows.


def load_table(number: int):
    """The module of experiments/paper_tables/table<number>.py (TABLE, TITLE, COLUMNS, ROWS, get_config)."""
    from ldm_jax import config_files

    if number not in TABLE_NUMBERS:
        raise ValueError(f"no paper table {number}; expected one of {TABLE_NUMBERS}")
    return config_files.load_config_module(TABLES_DIR / f"table{number}.py")


def table_rows(module) -> list:
    """Every row ConfigDict of a table module, in the paper's order."""
    return [module.get_config(name) for name in module.ROWS]


def _rows_module():
    import runpy

    return runpy.run_path(str(TABLES_DIR / "rows.py"))


def results_name(row, run: str = "") -> str:
    """The results folder name of a row's run: <table>_<row>, or <table>_<row>-<run> for an extra run."""
    return f"{row.table}_{row.row}" + (f"-{run}" if run else "")


def runs_of(row) -> list[str]:
    """The row's runs: "" (the main one) and its extra runs."""
    return [""] + list(row.runs)


def toy_checkpoint(work: pathlib.Path, size: str, toy: str) -> pathlib.Path:
    """Where `--run-toy` exports a toy model: WORK/toy_<size>/<toy>/{first_stage,model}.safetensors."""
    file = "first_stage.safetensors" if toy == "autoencoder" else "model.safetensors"
    return pathlib.Path(work) / f"toy_{size}" / toy / file


def run_settings(row, run: str = "", *, work=None, toy_sizes=None, toy_size: str = "default") -> dict:
    """The EvaluationSettings fields of one run of a row: the model source, then the row's settings.

    Toy rows take their checkpoint from `work` (a placeholder WORK when None) and the sizes of
    `toy_sizes` (toy.py's `evaluation` at `toy_size`) for the fields they set.
    """
    settings = row.evaluation.to_dict()
    extra = row.runs[run].to_dict() if run else {}
    samples = extra.pop("samples", row.samples)
    settings.update(extra)
    if row.model.toy:
        for name, value in (toy_sizes or {}).items():
            if name in settings:
                settings[name] = value
        source = {"checkpoint": str(toy_checkpoint(work or "WORK", toy_size, row.model.toy))}
        # One feature net and one set of reference statistics for all toy rows.
        settings["cache_dir"] = str(pathlib.Path(work or "WORK") / f"toy_{toy_size}" / "cache")
    elif samples:
        source = {"samples": samples}
        settings = {k: v for k, v in settings.items() if k not in SAMPLING_FIELDS}
    else:
        checkpoint = row.model.checkpoint or f"/ckpt/{row.table}_{row.row}/model.safetensors"
        source = {"checkpoint": checkpoint, "config": row.model.config}
    return {**source, **settings}


def evaluate_args(settings: dict, out) -> list[str]:
    """`ldm-jax evaluate` arguments for `settings` (EvaluationSettings fields), in the dataclass's order."""
    from ldm_jax.evaluation.evaluate import EvaluationSettings

    args = ["--out", str(out)]
    for field in dataclasses.fields(EvaluationSettings):
        value = settings.get(field.name)
        flag = "--" + field.name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(map(str, value))]
        else:
            args += [flag, str(value)]
    return args


def evaluation_settings(settings: dict):
    """The EvaluationSettings object of `settings` (metrics as a tuple, as the CLI gives them): what the
    printed command must parse into."""
    from ldm_jax.evaluation.evaluate import EvaluationSettings

    values = dict(settings)
    if values.get("metrics") is not None:
        values["metrics"] = tuple(values["metrics"])
    return EvaluationSettings(**values)


def command(row, run: str = "", *, results_dir=DEFAULT_RESULTS, work=None, toy_sizes=None,
            toy_size: str = "default") -> str:
    """The exact shell command that measures one run of a row (toy rows: into `work`)."""
    settings = run_settings(row, run, work=work, toy_sizes=toy_sizes, toy_size=toy_size)
    out = pathlib.Path(work or "WORK") / results_name(row, run) if row.model.toy else \
        pathlib.Path(results_dir) / results_name(row, run)
    return shlex.join(["ldm-jax", "evaluate", *evaluate_args(settings, out)])


# ----------------------------------------------------------------------------------------------
# Results.


def read_results(row, folders) -> dict[str, dict]:
    """run -> the metrics of its results.json, from the first folder that holds one (absent runs left out)."""
    found = {}
    for run in runs_of(row):
        for folder in folders:
            path = pathlib.Path(folder) / results_name(row, run) / RESULTS_FILE
            if path.is_file():
                results = json.loads(path.read_text(encoding="utf-8"))
                if "metrics" not in results:
                    raise ValueError(f"{path}: no 'metrics' in it; expected the results.json of `ldm-jax evaluate`")
                found[run] = results["metrics"]
                break
    return found


def _decimals(printed: str) -> int | None:
    """Decimal places of the first number in a printed cell ("247.67 ± 5.59" -> 2); None without one."""
    match = re.search(r"\d+(?:\.(\d+))?", printed or "")
    return None if match is None else len(match.group(1) or "")


def format_value(value: float, std: float | None, printed: str) -> str:
    """`value` (± `std`) with as many decimals as the paper prints in that cell, else 3 significant digits."""
    decimals = _decimals(printed)
    show = (lambda x: f"{x:.{decimals}f}") if decimals is not None else (lambda x: f"{x:#.3g}")
    return show(value) + (f" ± {show(std)}" if std is not None else "")


def ours_cell(row, column: str, metrics_by_run: dict[str, dict]) -> str:
    """Our value(s) of a column: NOT_MEASURED without a metric, MISSING where no results.json holds it."""
    keys = list(row.ours.get(column, []))
    if not keys:
        return NOT_MEASURED
    parts = []
    for key in keys:
        run, _, metric = key.rpartition(":")
        metrics = metrics_by_run.get(run, {})
        if metric not in metrics or metrics[metric] is None:
            parts.append(MISSING)
            continue
        std = metrics.get(f"{metric}_std")
        parts.append(format_value(float(metrics[metric]), None if std is None else float(std), row.paper[column]))
    return " / ".join(parts)


def settings_cell(row, settings: dict | None) -> str:
    """The sampler settings and sample count of a row's main run (`settings`, None: not measurable)."""
    if settings is None:
        return "not measurable: no released checkpoint or config"
    drawn = {**row.evaluation.to_dict(), **settings}   # a --samples run keeps how its samples were drawn
    parts = []
    if "steps" in drawn and "sampler" in drawn:
        parts.append(f"{drawn['sampler'].upper()} {drawn['steps']} steps, eta {drawn.get('eta', 0.0):g}")
        scale = drawn.get("guidance_scale", 1.0)
        parts.append(f"s = {scale:g}" if scale != 1 else "no guidance")
    if "samples" in settings:
        parts.append("samples drawn beforehand")
    if settings.get("num_samples"):
        parts.append(f"{settings['num_samples']:,} {'samples' if 'steps' in drawn else 'images'}")
    if settings.get("features") == "builtin":
        parts.append("built-in features")
    if not (row.model.checkpoint or row.model.toy):
        parts.append("no released checkpoint")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# Markdown.


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|") or " "


def render_table(module, rows, metrics: dict[str, dict[str, dict]], commands: dict[str, list[str]],
                 settings: dict[str, dict], user_files: dict[str, str]) -> str:
    """One table: the header, a line per row (ours beside paper), then its commands, files and notes.

    `metrics`: row name -> run -> results metrics; `commands`: row name -> its commands and `settings`:
    row name -> its main run's settings (both absent: not measurable); `user_files`: placeholder path
    -> what it must hold (listed when a command uses it).
    """
    header = ["Method"] + [f"{column} {side}" for column in module.COLUMNS for side in ("ours", "paper")] + ["Settings"]
    lines = [f"## {module.TITLE}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label]
        for column in module.COLUMNS:
            cells += [ours_cell(row, column, metrics.get(row.row, {})), row.paper.get(column, "")]
        cells.append(settings_cell(row, settings.get(row.row)))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    measured = [row for row in rows if commands.get(row.row)]
    if measured:
        lines += ["", "Commands (real rows: on an accelerator; toy rows: what `--run-toy` runs):", "", "```"]
        for row in measured:
            lines.append(f"# {row.row}: {row.label}")
            lines += commands[row.row]
        lines.append("```")
    used = sorted({path for row in measured for line in commands[row.row] for path in user_files if path in line})
    references = _grouped((row.row, row.reference) for row in measured)
    if references or used:
        lines += ["", "Data and files the commands read:", ""] + references
        lines += [f"- `{path}`: {user_files[path]}" for path in used]
    notes = _grouped((row.row, row.notes) for row in rows)
    if notes:
        lines += ["", "Notes:", ""] + notes
    return "\n".join(lines) + "\n"


def _grouped(named_texts) -> list[str]:
    """Markdown bullets "- `a`, `b`: text", one per distinct non-empty text, in order of first use."""
    names: dict[str, list[str]] = {}
    for name, text in named_texts:
        if text:
            names.setdefault(text, []).append(name)
    return [f"- {', '.join(f'`{n}`' for n in group)}: {text}" for text, group in names.items()]


# ----------------------------------------------------------------------------------------------
# Toy rows.


def train_toy_models(toy_config, needed, work, *, progress: bool) -> dict[str, pathlib.Path]:
    """Trains the toy models `needed` ("autoencoder", "ldm"; the LDM needs the autoencoder) unless exported."""
    from ldm_jax.training.loop import train_and_evaluate

    needed = set(needed) | ({"autoencoder"} if "ldm" in needed else set())
    paths = {name: toy_checkpoint(work, toy_config.size, name) for name in ("autoencoder", "ldm") if name in needed}
    for name in ("autoencoder", "ldm"):
        if name not in needed or paths[name].exists():
            continue
        config = toy_config[name].copy_and_resolve_references()
        if name == "ldm":
            config.pretrained.first_stage = str(paths["autoencoder"])
        print(f"training the toy {name} ({config.train.num_steps} steps) in {paths[name].parent}", file=sys.stderr)
        train_and_evaluate(config, paths[name].parent, progress=progress)
    return paths


def run_toy_rows(rows, work, toy_size: str, *, progress: bool) -> None:
    """Trains what the toy `rows` need, then runs each row's printed `ldm-jax evaluate` command (through
    `ldm_jax.cli.main`) into WORK/<table>_<row>/; a rerun resumes."""
    from ldm_jax import cli, config_files

    toy_config = config_files.load_config(f"{TABLES_DIR / 'toy.py'}:{toy_size}")
    train_toy_models(toy_config, {row.model.toy for row in rows}, work, progress=progress)
    for row in rows:
        for run in runs_of(row):
            args = shlex.split(command(row, run, work=work, toy_sizes=toy_config.evaluation.to_dict(),
                                       toy_size=toy_size))
            print(f"evaluating {results_name(row, run)}", file=sys.stderr)
            if cli.main(args[1:] + ([] if progress else ["--no-progress"])) != 0:
                raise RuntimeError(f"{shlex.join(args)} failed")


# ----------------------------------------------------------------------------------------------
# The script.


def render(numbers, *, results_dir=None, work=None, toy_size: str = "default") -> str:
    """The markdown of the tables `numbers`, filled from `results_dir` and `work` where results exist."""
    from ldm_jax import config_files

    toy_sizes = config_files.load_config(f"{TABLES_DIR / 'toy.py'}:{toy_size}").evaluation.to_dict()
    rows_module = _rows_module()
    folders = [folder for folder in (results_dir, work) if folder]
    parts = []
    for number in numbers:
        module = load_table(number)
        rows = table_rows(module)
        metrics = {row.row: read_results(row, folders) for row in rows}
        measured = [row for row in rows if rows_module["runnable"](row)]
        toy = {"work": work, "toy_sizes": toy_sizes, "toy_size": toy_size}
        commands = {row.row: [command(row, run, results_dir=results_dir or DEFAULT_RESULTS, **toy)
                              for run in runs_of(row)] for row in measured}
        settings = {row.row: run_settings(row, **toy) for row in measured}
        parts.append(render_table(module, rows, metrics, commands, settings, rows_module["USER_FILES"]))
    return "\n".join(parts)


def parse_tables(text: str) -> list[int]:
    """"1,3,8" -> [1, 3, 8], each checked against TABLE_NUMBERS."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tables {text!r}: expected numbers separated by commas, e.g. 1,3,8")
    unknown = [n for n in numbers if n not in TABLE_NUMBERS]
    if unknown or not numbers:
        raise argparse.ArgumentTypeError(f"--tables {text!r}: the tables are {','.join(map(str, TABLE_NUMBERS))}")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=parse_tables, default=list(TABLE_NUMBERS), help="e.g. 1,3,8 (default: all)")
    parser.add_argument("--results", help="folder of <table>_<row>/results.json from the printed commands")
    parser.add_argument("--run-toy", action="store_true", help="train and evaluate the toy rows into --work")
    parser.add_argument("--work", help="where the toy models and toy results go (needed by --run-toy)")
    parser.add_argument("--toy-size", default="default", help="a size of experiments/paper_tables/toy.py")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.run_toy and not args.work:
        parser.error("--run-toy needs --work DIR (where the toy models and their results go)")
    if args.run_toy:
        toy_rows = [row for number in args.tables for row in table_rows(load_table(number)) if row.model.toy]
        if not toy_rows:
            parser.error(f"tables {args.tables} have no toy rows; toy rows are in tables 3 and 8")
        run_toy_rows(toy_rows, args.work, args.toy_size, progress=not args.no_progress)
    markdown = render(args.tables, results_dir=args.results, work=args.work, toy_size=args.toy_size)
    print(markdown)
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(markdown, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
