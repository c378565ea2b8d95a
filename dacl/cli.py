"""``dacl`` command line: ``run`` (Hydra), ``list`` (registries), ``demo`` (offline source-only vs DANN).

Errors a user can fix print one ``dacl: error: ...`` line and exit with status 2.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable, NoReturn

from dacl.engine.signals import RunInterrupted
from dacl.errors import DaclError
from dacl.registry import did_you_mean

CONFIG_DIR = Path(os.environ.get("DACL_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))
CONFIG_GROUPS = ("method", "benchmark", "model", "trainer", "experiment", "stream", "strategy")
log = logging.getLogger("dacl")


def _fail(message: str) -> NoReturn:
    print(f"dacl: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def config_dirs() -> list[Path]:
    """dacl's own configs/, then every installed package's (``dacl.configs`` entry points)."""
    from dacl.plugins import plugin_config_dirs

    return [CONFIG_DIR, *plugin_config_dirs()]


def search_path_override() -> list[str]:
    """The Hydra override that adds installed packages' config folders to the search path (none: nothing)."""
    extra = config_dirs()[1:]
    return [f"hydra.searchpath=[{','.join('file://' + str(d) for d in extra)}]"] if extra else []


def check_overrides(overrides: list[str]) -> None:
    """Catch wrong group choices (``method=dannn``) before Hydra, with one line naming the options."""
    if not CONFIG_DIR.is_dir():
        _fail(f"config folder {CONFIG_DIR} not found; run from a dacl checkout or set DACL_CONFIG_DIR")
    dirs = config_dirs()
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if not sep or key not in CONFIG_GROUPS:
            continue
        available = sorted({p.stem for d in dirs for p in (d / key).glob("*.yaml")})
        for choice in filter(None, value.split(",")):
            if choice not in available:
                elsewhere = [g for g in CONFIG_GROUPS if g != key and any((d / g / f"{choice}.yaml").is_file() for d in dirs)]
                hint = did_you_mean(choice, available)
                if elsewhere:
                    example = f"dacl run {elsewhere[0]}={choice}" + (" stream=split_mnist" if elsewhere[0] == "strategy" else "")
                    hint = f" '{choice}' is a {elsewhere[0]} option: `{example}`."
                _fail(f"unknown {key} '{choice}'.{hint} Available: {', '.join(available)} "
                      f"(add configs/{key}/{choice}.yaml, or ship it in a package's dacl.configs entry point)")


# Groups each command composes; naming another command's group is a one-line redirect, not Hydra's error.
COMMAND_GROUPS = {"config": {"method", "benchmark", "model", "trainer", "experiment"},
                  "continual": {"stream", "strategy"}}
COMMAND_OF = {"config": "run", "continual": "continual"}  # config file -> the dacl command that composes it
REDIRECT = {"config": "continual strategies run with `dacl run stream=... strategy=...`",
            "continual": "DA, TTA and fine-tuning methods run with `dacl run method=... benchmark=...`"}


def preflight(config_name: str, args: list[str]) -> None:
    """Compose the configuration once before Hydra runs it, so a misspelt key (``trainer.lrr=0.1``), a group of the
    other command, or a malformed value is one ``dacl: error:`` line instead of Hydra's multi-line report."""
    for item in args:
        key = item.lstrip("+~").partition("=")[0]
        if key in CONFIG_GROUPS and key not in COMMAND_GROUPS[config_name]:
            _fail(f"dacl {COMMAND_OF[config_name]} has no '{key}' option: {REDIRECT[config_name]}")
    if any(a.startswith("-") for a in args):  # -m sweeps (composed per job), --cfg/--help/--info: Hydra's own
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    overrides = [a for a in args if not a.startswith("hydra.")] + search_path_override()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except HydraException as exc:
        text = str(exc)
        unknown = re.match(r"Could not override '([^']+)'\.\s*To append to your config use (\S+)", text)
        if unknown:
            key = unknown.group(1)
            _fail(f"unknown option '{key}'.{_close_key(config_name, overrides, key)} All options: "
                  f"`dacl {COMMAND_OF[config_name]} --cfg job`")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "hydra.cc/docs" not in ln]
        _fail("; ".join(lines))


def _close_key(config_name: str, overrides: list[str], key: str) -> str:
    """' Did you mean ...?' among the keys beside ``key`` in the composed config."""
    import difflib

    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o.lstrip("+~").partition("=")[0] != key]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        close = difflib.get_close_matches(leaf, list(node.keys()), n=1) if isinstance(node, DictConfig) else []
        return f" Did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else ""
    except Exception:  # noqa: BLE001  (a suggestion is a courtesy; the error line stands without it)
        return ""


def trial_suffix(variant: object, hparams_seed: object) -> str:
    """Run-folder suffix that keeps sweep trials apart: '' for the defaults, '_hp3' for a random draw,
    '_<variant>' for a declared variant (both when both are set)."""
    parts = [str(variant)] if variant not in (None, "", "None") else []
    if hparams_seed not in (None, "", 0, "0"):
        parts.append(f"hp{hparams_seed}")
    return "".join(f"_{p}" for p in parts)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dacl_trial"):
        OmegaConf.register_new_resolver("dacl_trial", trial_suffix)


def _hydra_command(name: str, config_name: str, args: list[str], run: Callable[..., dict],
                   summary: Callable[[dict], str]) -> None:
    """Shared by ``run`` and ``continual``: Hydra compose, one job per configuration, the exact command recorded;
    in a multirun a failing configuration is reported (its failed.json written) without stopping the sweep."""
    check_overrides(args)
    _register_resolvers()
    preflight(config_name, args)
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = f"--nnodes {world // per_node} " if world > per_node else ""
    launcher = f"torchrun {nodes}--nproc_per_node {per_node} -m dacl" if world > 1 else "dacl"  # reproduces the run
    command = f"{launcher} {name} " + " ".join(shlex.quote(a) for a in args)

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        multirun = hc.mode == RunMode.MULTIRUN
        job_command = command if not multirun else f"{launcher} {name} {' '.join(shlex.quote(o) for o in hc.overrides.task)}"
        try:
            res = run(cfg, run_dir, command=job_command, keep_setup_failures=multirun)
        except RunInterrupted as exc:  # failed.json says "interrupted"; a scheduler's requeue resumes the run
            print(f"dacl: {exc}", file=sys.stderr)
            raise SystemExit(128 + exc.signum) from None
        except Exception as exc:  # noqa: BLE001  (failed.json is already written by the run)
            if multirun:  # one bad configuration never stops a sweep; the collector lists it as failed
                print(f"dacl: error in {run_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)
                return
            if isinstance(exc, DaclError):
                _fail(str(exc))
            raise
        if res.get("status") == "worker":  # a torchrun rank > 0: rank 0 reports
            return
        print(f"{summary(res)} -> {run_dir / 'results.json'}")

    sys.argv = [f"dacl {name}", *args, *search_path_override()]
    _main()


def cmd_run(args: list[str]) -> None:
    """Any registered method: DA, TTA and fine-tuning through configs/config.yaml; a continual strategy (an override
    of the ``stream`` or ``strategy`` group) composes configs/continual.yaml, with the same ``trainer.*`` section."""
    if any(a.lstrip("+~").partition("=")[0] in COMMAND_GROUPS["continual"] for a in args):
        cmd_continual(args, name="run")
        return

    def run(*a, **kw):
        from dacl.experiment import run_experiment

        return run_experiment(*a, **kw)

    def summary(res: dict) -> str:
        acc = res["metrics"]["target_test_acc"]
        if res.get("kind") == "feature_space":
            return (f"{res['task']} {res['method_hparams']['adapter']}: target acc "
                    + ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"]["classifier_acc"].items()))
        if res.get("kind") == "tta":
            tta = res["metrics"]["test_time_adaptation"]
            return (f"{res['task']} {res['method']} seed={res['seed']}: target acc adapted={acc['last']:.4f} "
                    f"(source model {tta['source_target_test_acc']:.4f}, {tta['protocol']})")
        return (f"{res['task']} {res['method']} seed={res['seed']}: target acc last={acc['last']:.4f} "
                f"source_val-selected={acc['source_val']:.4f} (oracle {acc['oracle']:.4f}) "
                f"[{res['train_images_per_second']:.0f} examples/s]")

    _hydra_command("run", "config", args, run, summary)


def cmd_continual(args: list[str], name: str = "continual") -> None:
    """A continual-learning run (configs/continual.yaml): stream x scenario x strategy -> accuracy matrix."""
    def run(*a, **kw):
        from dacl.experiment_continual import run_continual

        return run_continual(*a, **kw)

    def summary(res: dict) -> str:
        m = res["metrics"]
        extra = "" if "bwt" not in m else f" BWT={m['bwt']:+.4f} forgetting={m['forgetting']:.4f}"
        return (f"{res['stream']} {res['scenario']}-IL {res['method']} seed={res['seed']}: average acc "
                f"{m['average_accuracy']:.4f}{extra} [{m['images_per_second']:.0f} img/s]")

    _hydra_command(name, "continual", args, run, summary)


def cmd_list(args: list[str]) -> None:
    from dacl.registry import ALL_REGISTRIES

    for kind, reg in ALL_REGISTRIES.items():
        print(f"{kind}s:")
        for name in reg.names():
            doc = (reg.get(name).__doc__ or "").strip().splitlines()
            print(f"  {name:<20} {doc[0] if doc else ''}")
    from dacl.studies.measure import registered_measurements

    print("measurements (dacl measure measurement=<name>):")
    for name, spec in registered_measurements().items():
        doc = (spec.fn.__doc__ or "").strip().splitlines()
        print(f"  {name:<20} {doc[0] if doc else ''}")


def cmd_demo(args: list[str]) -> None:
    from dacl.demo import run_demo

    run_demo(args)


def cmd_reproduce(args: list[str]) -> None:
    """Re-make a committed table from its study file (configs/study/<name>.yaml)."""
    import argparse

    from dacl.studies.reproduce import Options, list_studies, reproduce, reproduce_all

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:  # one `dacl: error:` line, as every other command
            _fail(f"reproduce: {message} (`dacl reproduce --help`)")

    ap = Parser(prog="dacl reproduce", description="Run what a study's run archive lacks, then "
                                 "re-make its table (configs/study/<study>.yaml).")
    ap.add_argument("study", nargs="?", help="a study name (`dacl reproduce --list`)")
    ap.add_argument("--list", action="store_true", help="list the studies and their tables")
    ap.add_argument("--all", action="store_true", help="every study in turn (with --quick: a miniature of each)")
    ap.add_argument("--collect-only", action="store_true", help="train nothing: re-make the table from its records")
    ap.add_argument("--quick", action="store_true", help="the whole grid with the study's short overrides, into "
                    "runs/quick/<study> (a smoke test; never a committed table)")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side (one per core with trainer.threads=1)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the table (default: where it is committed)")
    ap.add_argument("--data-root", default=None, help="dataset folder, e.g. ../shared/data")
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="parent folder of the run folders")
    ap.add_argument("--launcher", default=None, help="a Hydra launcher for every run, as `dacl run -m "
                    "hydra/launcher=...` (e.g. submitit_slurm; configure it with hydra.launcher.* runtime overrides)")
    ap.add_argument("overrides", nargs="*", help="runtime overrides for every run, e.g. trainer.device=cuda")
    ns = ap.parse_intermixed_args(args)
    if ns.list:
        list_studies()
        return
    if ns.jobs < 1:
        _fail(f"--jobs must be at least 1, got {ns.jobs}")
    opts = Options(collect_only=ns.collect_only, quick=ns.quick, jobs=ns.jobs, out=ns.out, data_root=ns.data_root,
                   runs=ns.runs.resolve(), extra=tuple(ns.overrides), launcher=ns.launcher)
    if ns.all:
        failed = reproduce_all(opts)
        if failed:
            _fail(f"{len(failed)} studies failed: {', '.join(failed)}")
        return
    if not ns.study:
        _fail("name a study (`dacl reproduce --list` lists them), or pass --all")
    reproduce(ns.study, opts)


def cmd_collect(args: list[str]) -> None:
    """Collect any sweep's run folders into a table (runs that belong to no study)."""
    import argparse

    from dacl.reporting import collect_runs

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            _fail(f"collect: {message} (`dacl collect --help`)")

    ap = Parser(prog="dacl collect", description="Run folders (results.json / failed.json) or run-record files -> "
                "<out>.md, .csv and .runs.jsonl. Committed tables come from `dacl reproduce <study>`.")
    ap.add_argument("roots", nargs="+", help="run folders, or a table's <table>.runs.jsonl")
    ap.add_argument("--out", required=True, help="output path without extension")
    ap.add_argument("--title", default="Results")
    ap.add_argument("--note", action="append", default=[], help="a note line under the table (repeatable)")
    ap.add_argument("--variants", default=None, help="keep only these variants (comma-separated; 'none' = no variant)")
    ap.add_argument("--drop-variants", default=None, help="leave out these variants (comma-separated)")
    ns = ap.parse_args(args)
    md = collect_runs(ns.roots, ns.out, ns.title, ns.note, "dacl collect " + shlex.join(args), ns.variants,
                      ns.drop_variants)
    print(md.read_text())


def cmd_data(args: list[str]) -> None:
    """Dataset utilities: ``dacl data synth <benchmark> --images N --out DIR`` writes a synthetic tree in the
    benchmark's published layout (for tests, throughput benchmarks and trying a recipe without the data)."""
    import argparse

    from dacl.data.synth import WRITERS, write_synthetic

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            _fail(f"data: {message} (`dacl data synth --help`)")

    ap = Parser(prog="dacl data", description="Dataset utilities.")
    sub = ap.add_subparsers(dest="action", required=True)
    synth = sub.add_parser("synth", help="write a synthetic tree in a benchmark's on-disk layout")
    synth.add_argument("benchmark", help=f"one of {', '.join(WRITERS)}")
    synth.add_argument("--images", type=int, default=1000, help="how many images (split over its lists / classes)")
    synth.add_argument("--out", required=True, help="folder to write into (the dataset's own folder goes inside)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=1, help="processes encoding images")
    ns = ap.parse_args(args)
    print(write_synthetic(ns.benchmark, ns.out, ns.images, ns.seed, ns.workers))


def cmd_measure(args: list[str]) -> None:
    """``dacl measure measurement=<name> key=value ... [--out FOLDER]``: one measurement (a framework comparison, a
    throughput probe) into a run folder, as ``dacl run`` trains one configuration (dacl/studies/measure.py)."""
    import argparse
    import shlex

    from dacl.studies.measure import MEASUREMENTS, compose, run_measurement

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            _fail(f"measure: {message} (`dacl measure --help`)")

    ap = Parser(prog="dacl measure", description=cmd_measure.__doc__)
    ap.add_argument("overrides", nargs="*", help="measurement=<name> and its key=value options")
    ap.add_argument("--out", default=None, help="run folder (default runs/measure/<name>/<options>)")
    ns = ap.parse_intermixed_args(args)  # key=value options may follow --out (as `dacl reproduce` appends data_root)
    config = compose(ns.overrides)
    name = config["measurement"]
    shown = [o for o in ns.overrides if not o.startswith("measurement=")]
    out = ns.out or Path("runs") / "measure" / name / ("_".join(o.replace("/", "-") for o in shown) or "defaults")
    record = run_measurement(config, out, "dacl measure " + shlex.join(ns.overrides))
    print(f"{name} {' '.join(shown)}: {MEASUREMENTS[name].describe(record['metrics'])} -> {Path(out) / 'results.json'}")


COMMANDS: dict[str, Callable[[list[str]], None]] = {"run": cmd_run, "continual": cmd_continual, "list": cmd_list,
                                                     "demo": cmd_demo, "reproduce": cmd_reproduce, "collect": cmd_collect,
                                                     "data": cmd_data, "measure": cmd_measure}
USAGE = """usage: dacl <command> [args]

commands:
  run   [hydra overrides]   train one configuration, e.g. dacl run method=dann benchmark=mnist_usps data_root=../shared/data
                            (add -m for multirun sweeps: dacl run -m seed=0,1,2 method=source_only,dann);
                            a continual stream: dacl run stream=split_mnist scenario=class strategy=replay
                            (strategies: configs/strategy/*.yaml; `dacl continual` is the same command)
  list                      print registered methods, plugins, benchmarks, datasets, backbones, validators, ...
  demo  [hydra overrides]   offline source-only vs DANN on the package-shipped digits; prints a table
  reproduce <study>         run what a committed table lacks and re-make it (configs/study/*.yaml);
                            --list, --collect-only, --quick, --jobs N, --out DIR, --data-root DIR
  collect <run folders> --out PREFIX   any sweep's runs -> PREFIX.md / .csv / .runs.jsonl
  measure measurement=<name> [key=value ...]   one measurement that is not a training run (throughput, a
                            framework comparison, ...; `dacl list` names them) into a run folder, as a run record
  data synth <benchmark> --images N --out DIR   a synthetic tree in a benchmark's on-disk layout (office31,
                            officehome, visda2017, domainnet, cifar10, cifar100, cifar10_c, tiny_imagenet, imagenet_c)
"""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command = COMMANDS.get(argv[0])
    if command is None:
        _fail(f"unknown command '{argv[0]}'.{did_you_mean(argv[0], list(COMMANDS))} Commands: {', '.join(COMMANDS)}")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    try:
        command(argv[1:])
    except DaclError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    main()
