"""The ``clipbench`` command line: what the Snakemake rules call.

    clipbench prepare DATASET  (--configfile F ... | --json CFG) --out DIR
    clipbench fetch-weights    NAME [--out data/weights] [--json CFG]
    clipbench track-data       [data]
    clipbench train            (--configfile F ... --task T --method M --seed S | --spec JSON) --data MANIFEST --out DIR [--tuned CHOSEN.json]
    clipbench record-failure   --spec SPEC --out DIR --exit-code N [--log LOG]
    clipbench spec             train|trial|noise|task|heavytail [--task T --method M --seed S --trial N] [--configfile F ...]
    clipbench rerun            RUN_DIR ...   (delete runs' results and checkpoints: trained from step 0 next)
    clipbench baseline TASK    --task-json CFG --data MANIFEST --out JSON   (tasks with a baseline)
    clipbench noise            --spec JSON --data MANIFEST [--checkpoint CKPT --init INIT --methods JSON] --out DIR
    clipbench heavytail        (--configfile F ... | --json CFG) --out DIR
    clipbench tune-select      TRIAL_METRICS.json ... --task T --method M --out CHOSEN.json
    clipbench collect          [METRICS.json ...] --out CSV
    clipbench report           --summary CSV --out DIR [--config-json CFG] [--manifests M ...] [--tuning results/tuning]
    clipbench readme           [--readme README.md --results results --claims report/claims.json]
    clipbench bench optim|data|train|cost|workflow [options of that benchmark; --help]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from clipbench import config as cfgmod
from clipbench import jobserver
from clipbench import runfiles
from clipbench import spec as jobspec
from clipbench.errors import ClipbenchError
from clipbench.tasks import registry
from clipbench.tuning import TuningError


def _json_arg(text: str, what: str) -> dict:
    """A JSON object given inline, or the path of a file holding one (what the workflow passes:
    results/specs/..., so its shell lines stay short and any job can be replayed by hand)."""
    source = what
    if not text.lstrip().startswith("{"):
        source = f"{what} {text}"
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise SystemExit(f"clipbench: {what}: cannot read {text!r} ({exc.strerror or exc}); "
                             "give a JSON object or the path of a .json file holding one")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"clipbench: {source} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        raise SystemExit(f"clipbench: {source} must be a JSON object")
    return value


def cmd_prepare(args) -> int:
    from clipbench.data.prepare import prepare

    if args.json:
        ds_cfg = _json_arg(args.json, "--json")
    else:
        config = cfgmod.load(*args.configfile)
        ds_cfg = config["datasets"].get(args.dataset, {})
    manifest = prepare(args.dataset, ds_cfg, args.out)
    print(f"{args.dataset}: {manifest['source']} at {manifest['root']}")
    return 0


def cmd_fetch_weights(args) -> int:
    from clipbench.data.download import DownloadError
    from clipbench.data.weights import fetch_weights

    cfg = _json_arg(args.json, "--json") if args.json else {}
    try:
        print(fetch_weights(args.name, args.out, mirrors=cfg.get("mirrors") or None))
    except (DownloadError, KeyError) as exc:
        print(f"clipbench fetch-weights: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_track_data(args) -> int:
    from clipbench.data.dvc import track

    print(track(args.path))
    return 0


def cmd_train(args) -> int:
    from clipbench.data.prepare import load_manifest
    from clipbench.engine.train import Interrupted, train

    if args.spec:
        spec = _json_arg(args.spec, "--spec")
    else:
        if not (args.configfile and args.task and args.method and args.seed is not None):
            raise SystemExit("clipbench train: give --spec, or --configfile with --task, --method and --seed")
        spec = jobspec.run_spec(cfgmod.load(*args.configfile), args.task, args.method, args.seed)
    if args.tuned:
        from clipbench import files

        spec = jobspec.apply_chosen(spec, files.read_json(args.tuned))
    manifest = load_manifest(args.data) if args.data else None
    spec = _resolve_levels(_with_runtime(spec, args.runtime), args.noise)
    try:
        result = train(spec, manifest, args.out)
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM
    print(json.dumps({k: result[k] for k in ("task", "method", "seed", "status", "final")}))
    fail = spec.get("engine", {}).get("fail_on_divergence", False)
    return 3 if (fail and result["status"] == "diverged") else 0


def cmd_record_failure(args) -> int:
    if args.exit_code == 3:
        return 3  # a divergence with engine.fail_on_divergence: the user asked the workflow to stop
    spec = _json_arg(str(args.spec), "--spec")
    task, method, seed = spec["task"], spec["method"], int(spec["seed"])
    m = runfiles.record_failure(args.out, task, method, seed, args.exit_code, args.log)
    message = (f"{task}/{method}/seed{seed} FAILED (exit code {args.exit_code}): {m['failure']['error']}\n"
               f"  recorded in {args.out}; the workflow goes on and the report lists it; the next `snakemake` "
               f"tries it again (resuming from its checkpoint)\n")
    sys.stderr.write(message)  # the terminal (a cluster job's own log)
    if args.log:
        with open(args.log, "a") as log:
            log.write(message)
    return 0


def cmd_spec(args) -> int:
    config = cfgmod.load(*args.configfile)
    if args.job != "heavytail" and not args.task:
        raise SystemExit(f"clipbench spec {args.job}: give --task")
    try:
        if args.job == "train":
            spec = jobspec.train_job(config, args.task, args.method, args.seed)
        elif args.job == "trial":
            spec = jobspec.trial_job(config, args.task, args.method, args.trial)
        elif args.job == "noise":
            spec = jobspec.noise_job(config, args.task)
        elif args.job == "heavytail":
            spec = jobspec.heavytail_settings(config)
        else:  # a baseline's
            spec = jobspec.task_settings(config, args.task)
    except KeyError as exc:
        raise SystemExit(f"clipbench spec {args.job}: {exc} is not in the config ({' + '.join(args.configfile)})")
    sys.stdout.write(jobspec.text(spec))
    return 0


def cmd_rerun(args) -> int:
    for run in args.runs:
        if not run.is_dir():
            raise SystemExit(f"clipbench rerun: {run}: no such run folder (e.g. results/runs/<task>/<method>/seed<k>)")
        if not any((run / name).exists() for name in runfiles.RUN_FILES):
            raise SystemExit(f"clipbench rerun: {run}: not a run folder (it holds none of "
                             f"{', '.join(runfiles.RUN_FILES)})")
    for run in args.runs:
        removed = runfiles.forget(run)
        print(f"{run}: removed {', '.join(removed)}; the next `snakemake` (or `clipbench train`) trains it from step 0")
    return 0


def _with_runtime(spec: dict, runtime_json: str | None) -> dict:
    """The spec with the neutral engine settings of the workflow's environment, then --runtime's."""
    env = os.environ.get(jobspec.RUNTIME_ENV)
    try:
        if env:
            spec = jobspec.with_runtime(spec, _json_arg(env, jobspec.RUNTIME_ENV), jobspec.RUNTIME_ENV, over_spec=False)
        return jobspec.with_runtime(spec, _json_arg(runtime_json, "--runtime") if runtime_json else None)
    except cfgmod.ConfigError as exc:
        raise SystemExit(f"clipbench: {exc}")


def _resolve_levels(spec: dict, init_json) -> dict:
    """Clip levels given as ``{quantile: q}`` become numbers, from the task's noise at initialisation."""
    from clipbench import files

    try:
        return jobspec.with_levels(spec, files.read_json(init_json) if init_json else None)
    except cfgmod.ConfigError as exc:
        raise SystemExit(f"clipbench train: {exc}")


def cmd_noise(args) -> int:
    from clipbench.data.prepare import load_manifest
    from clipbench.diagnostics import noise

    spec = _with_runtime(_json_arg(args.spec, "--spec"), args.runtime)
    methods = _json_arg(args.methods, "--methods") if args.methods else {}
    manifest = load_manifest(args.data) if args.data else None
    checkpoint, skipped = args.checkpoint, None
    if args.checkpoint_from:
        if not args.init:
            raise SystemExit("clipbench noise: --checkpoint-from needs --init (the task's init.json)")
        run, metrics, skipped = noise.pick_reference(args.checkpoint_from)
        for s in skipped:
            print(f"clipbench noise: not measuring at {s['run']}: it {s['why']}", file=sys.stderr)
        if run is not None:
            # Measured as the chosen run trained (its method, seed and batch), this job's engine.
            checkpoint = run / runfiles.CHECKPOINT
            spec = {**metrics["spec"], "engine": spec["engine"], "noise": spec.get("noise", {})}
    print(noise.run(spec, manifest, args.out, checkpoint, args.init, methods, skipped=skipped))
    return 0


def cmd_tune_select(args) -> int:
    from clipbench import files, tuning

    chosen = tuning.select(args.task, args.method, [files.read_json(p) for p in args.metrics], args.tolerance)
    files.write_json(args.out, chosen)
    print(json.dumps({k: chosen["chosen"][k] for k in ("trial", "params", "value")}))
    return 0


def cmd_baseline(args) -> int:
    from clipbench import files
    from clipbench.data.prepare import load_manifest

    baseline = registry.baseline_function(args.task)
    if args.task_json:
        task_cfg = _json_arg(args.task_json, "--task-json")
    else:
        task_cfg = cfgmod.load(*args.configfile)["tasks"][args.task]
    result = baseline(task_cfg, load_manifest(args.data))
    files.write_json(args.out, {"task": args.task, "rows": [result]})
    print(json.dumps(result["metrics"]))
    return 0


def cmd_heavytail(args) -> int:
    from clipbench.diagnostics.heavytail import run

    if args.json:
        cfg = cfgmod.with_section_defaults("heavytail", _json_arg(args.json, "--json"))
    else:
        cfg = jobspec.heavytail_settings(cfgmod.load(*args.configfile))
    summary = run(cfg, args.out)
    for line in summary["verdicts"]:
        print(line)
    return 0


def cmd_collect(args) -> int:
    from clipbench.report.collect import collect, dvc_views, load_histories, run_dirs

    runs = [Path(m).parent for m in args.metrics] if args.metrics else run_dirs(args.runs)
    summary = collect(runs, args.out)
    if args.dvc_metrics or args.dvc_plots or args.dvc_metrics_dir:
        dvc_views(summary, load_histories(runs), args.dvc_metrics or args.out.with_name("metrics.json"),
                  args.dvc_plots or args.out.with_name("plots"), metrics_dir=args.dvc_metrics_dir)
    print(f"{args.out}: {len(summary)} rows")
    from clipbench.report.audit import audit

    for line in audit(summary, load_histories([]))[2]["lines"]:
        print(f"clipbench collect: warning: {line}", file=sys.stderr)
    return 0


def cmd_jobserver(args) -> int:
    path = args.socket or jobserver.socket_path(os.getcwd())
    if args.action == "stop":
        print(f"clipbench jobserver: {'asked the one at ' + path + ' to stop' if jobserver.shutdown(path) else 'none at ' + path}")
        return 0
    jobserver.serve(path, run, idle=args.idle)
    return 0


def cmd_readme(args) -> int:
    from clipbench.report.readme import update

    try:
        names = update(args.readme, args.results, args.claims, args.other, args.other_note)
    except (FileNotFoundError, ValueError) as exc:
        print(f"clipbench readme: {exc}", file=sys.stderr)
        return 1
    print(f"{args.readme}: wrote {', '.join(names)}")
    return 0


def cmd_report(args) -> int:
    from clipbench.report.render import build_report

    config = None
    if args.config_json:
        config = _json_arg(args.config_json, "--config-json")
    elif args.configfile:
        config = cfgmod.load(*args.configfile)
    if config is not None:
        config = jobspec.without_neutral(config)  # the hash stated is of the settings that change numbers
    paths = build_report(args.summary, args.out, baselines=args.baselines, config=config, manifests=args.manifests,
                         noise=args.noise, heavytail=args.heavytail,
                         tuning=args.tuning, workers=args.workers)
    for p in paths:
        print(p)
    return 0


BENCHMARKS = {
    "optim": "step time of the clipped optimizers against torch.optim.SGD, telemetry on and off",
    "data": "is the input pipeline fast enough to keep a GPU busy (pre-resize, decode, augment)",
    "train": "is the optimizer visible in a full training step, per method",
    "cost": "what the thesis replication costs: time and memory per task, from a few timed steps",
    "workflow": "where a finished workflow's wall time went, per rule (from results/benchmarks/)",
}


def cmd_bench(args, rest: list[str]) -> int:
    if args.what is None:
        print("usage: clipbench bench WHAT [options of that benchmark]\n\nbenchmarks (clipbench bench WHAT --help "
              "for their options):\n" + "\n".join(f"  {k:9s} {v}" for k, v in BENCHMARKS.items()))
        return 0 if {"-h", "--help"} & set(rest) else 2
    if args.what == "optim":
        from clipbench.bench.optim import main as bench_main
    elif args.what == "data":
        from clipbench.bench.data import main as bench_main
    elif args.what == "train":
        from clipbench.bench.train import main as bench_main
    elif args.what == "cost":
        from clipbench.bench.cost import main as bench_main
    elif args.what == "workflow":
        from clipbench.bench.workflow import main as bench_main
    else:
        raise SystemExit(f"clipbench bench: unknown benchmark {args.what!r}")
    return bench_main(rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error that is the user's to fix (bad data, a missing file, a "
                   "config that cannot run), not only its message; also CLIPBENCH_DEBUG=1")
    sub = p.add_subparsers(dest="command", required=True)
    _data_commands(sub)
    _run_commands(sub)
    _result_commands(sub)
    return p


def _data_commands(sub) -> None:
    s = sub.add_parser("prepare", help="make a dataset ready (generate, download, check) and write its manifest")
    s.add_argument("dataset", help="imagenet100, voc2012 or div2k (a key of the config's datasets)")
    s.add_argument("--configfile", action="append", default=[], help="config file(s), merged in order")
    s.add_argument("--json", help="the dataset's settings as JSON, or a .json file holding it (what the Snakemake rule passes)")
    s.add_argument("--out", required=True, type=Path, help="folder for the prepared data and manifest.json")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("fetch-weights", help="download pretrained weights (pinned, verified) into data/weights")
    s.add_argument("name", help="e.g. vgg16_imagenet (see clipbench.data.sources)")
    s.add_argument("--out", type=Path, default=Path("data/weights"), help="folder to put the weights file in")
    s.add_argument("--json", help="the config's weights section as JSON or a .json file (mirrors; what the Snakemake rule passes)")
    s.set_defaults(func=cmd_fetch_weights)

    s = sub.add_parser("track-data", help="version the raw archives with DVC (`dvc add data`)")
    s.add_argument("path", nargs="?", default="data", help="the folder of raw archives to track (default: data)")
    s.set_defaults(func=cmd_track_data)


def _run_commands(sub) -> None:
    s = sub.add_parser("train", help="run (or resume) one training run")
    s.add_argument("--spec", help="the run's resolved settings as JSON, or a .json file holding it (what the Snakemake rule passes)")
    s.add_argument("--configfile", action="append", default=[], help="config file(s), merged in order")
    s.add_argument("--task", choices=registry.names(), help="the run's task (with --configfile)")
    s.add_argument("--method", help=f"one of {', '.join(cfgmod.methods())}, or a method of your own in the config")
    s.add_argument("--seed", type=int, help="the run's seed (with --configfile)")
    s.add_argument("--data", type=Path, help="the dataset's manifest.json from `clipbench prepare`")
    s.add_argument("--noise", type=Path, help="the task's init.json from `clipbench noise`, for {quantile: q} clip levels")
    s.add_argument("--out", required=True, type=Path, help="the run folder")
    s.add_argument("--tuned", type=Path, help="a chosen.json from `clipbench tune-select`: train with its setting")
    s.add_argument("--runtime", help="engine settings that change no number (threads, loaders, checkpoint_every_steps, "
                   "...) as JSON, over the spec's; the workflow passes them in the environment (CLIPBENCH_RUNTIME, under the "
                   "spec's), apart from the spec, so that changing one reruns nothing")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("record-failure", help="record that a run's training job failed (what the train rule "
                       "runs when `clipbench train` exits non-zero), so that the workflow goes on without it")
    s.add_argument("--out", required=True, type=Path, help="the run folder")
    s.add_argument("--spec", required=True, help="the run's spec (the file `clipbench train --spec` read): "
                   "its task, method and seed")
    s.add_argument("--exit-code", required=True, type=int, help="the exit code of `clipbench train`")
    s.add_argument("--log", type=Path, help="the job's log (its last error line is recorded)")
    s.set_defaults(func=cmd_record_failure)

    s = sub.add_parser("spec", help="print a job's resolved settings, as the workflow hands them to it "
                       "(results/specs/...): `clipbench train --spec FILE` replays a run by hand")
    s.add_argument("job", choices=("train", "trial", "noise", "task", "heavytail"),
                   help="a training run's, a tuning trial's, the noise measurement's, a task's own settings "
                        "(its baseline's), or the convex check's")
    s.add_argument("--configfile", nargs="+", default=["config/config.yaml"],
                   help="config files, merged in order as Snakemake's --configfile (default: config/config.yaml)")
    s.add_argument("--task", help="the task (all but heavytail)")
    s.add_argument("--method", help="the method (train, trial)")
    s.add_argument("--seed", type=int, default=0, help="the run's seed (train; default 0)")
    s.add_argument("--trial", type=int, default=0, help="the trial's index (trial; default 0)")
    s.set_defaults(func=cmd_spec)

    s = sub.add_parser("rerun", help="delete runs' results and checkpoints, so that they are trained again "
                       "from step 0 (a complete checkpoint otherwise only rewrites the results)")
    s.add_argument("runs", nargs="+", type=Path, help="run folders, e.g. results/runs/classification/sgd/seed0")
    s.set_defaults(func=cmd_rerun)

    s = sub.add_parser("noise", help="gradient-noise diagnostics of a task at initialisation or at a run's checkpoint")
    s.add_argument("--spec", required=True, help="a run's resolved settings as JSON or a .json file (its seed and batch size are used)")
    s.add_argument("--data", type=Path, help="the dataset's manifest.json")
    s.add_argument("--checkpoint", type=Path, help="measure at this checkpoint.pt (default: at initialisation)")
    s.add_argument("--checkpoint-from", nargs="+", type=Path, metavar="RUN_DIR",
                   help="measure at the checkpoint of the first of these runs that finished (not diverged, "
                   "not failed); none did: noise.json says why, with the point at initialisation only")
    s.add_argument("--init", type=Path, help="the init.json of the same task (with --checkpoint)")
    s.add_argument("--methods", help="the task's methods' settings as JSON or a .json file: their resolved clip levels are recorded; "
                   "at initialisation the clip statistics are also kept at the clipped methods' batch multipliers "
                   "and clip_plan.json predicts each clipped method's share of clipped steps")
    s.add_argument("--out", required=True, type=Path, help="results/noise/<task>")
    s.add_argument("--runtime", help="engine settings that change no number (threads, loaders, checkpoint_every_steps, "
                   "...) as JSON, over the spec's; the workflow passes them in the environment (CLIPBENCH_RUNTIME, under the "
                   "spec's), apart from the spec, so that changing one reruns nothing")
    s.set_defaults(func=cmd_noise)

    s = sub.add_parser("tune-select", help="pick the best tuning trial of a (task, method) by its held-out metric")
    s.add_argument("metrics", nargs="+", type=Path, help="the trials' metrics.json files")
    s.add_argument("--task", required=True, help="the trials' task")
    s.add_argument("--method", required=True, help="the trials' method")
    s.add_argument("--tolerance", type=float, default=0.05, help="the sensitivity width's tolerance (relative)")
    s.add_argument("--out", required=True, type=Path, help="where to write chosen.json")
    s.set_defaults(func=cmd_tune_select)

    s = sub.add_parser("baseline", help="score a training-free baseline on a task's validation set (superres: bicubic)")
    s.add_argument("task", choices=registry.with_baseline(), help="a task with a training-free baseline")
    s.add_argument("--task-json", help="the task's settings as JSON, or a .json file holding it (what the Snakemake rule passes)")
    s.add_argument("--configfile", action="append", default=[], help="config file(s), merged in order")
    s.add_argument("--data", required=True, type=Path, help="the dataset's manifest.json")
    s.add_argument("--out", required=True, type=Path, help="where to write the JSON result")
    s.set_defaults(func=cmd_baseline)

    s = sub.add_parser("heavytail", help="the convex check: clipped vs unclipped methods under Gaussian and heavy-tailed noise")
    s.add_argument("--json", help="the task's settings as JSON, or a .json file holding it (what the Snakemake rule passes)")
    s.add_argument("--configfile", action="append", default=[], help="config file(s), merged in order")
    s.add_argument("--out", type=Path, default=Path("results/heavytail"), help="folder for quantiles.csv, summary.json, quantiles.png")
    s.set_defaults(func=cmd_heavytail)


def _result_commands(sub) -> None:
    s = sub.add_parser("collect", help="gather every run's metrics into one tidy table")
    s.add_argument("metrics", nargs="*", type=Path, help="runs' metrics.json files (default: every run under --runs)")
    s.add_argument("--runs", type=Path, default=Path(runfiles.RUNS_DIR), help="the run folders' root (without METRICS)")
    s.add_argument("--out", type=Path, default=Path("results/summary.csv"), help="the tidy table to write")
    s.add_argument("--dvc-metrics", type=Path, help="also write each task's main val metric per method (mean over "
                   "seeds) as JSON: the numeric columns of `dvc exp show` and `dvc metrics diff`")
    s.add_argument("--dvc-plots", type=Path, help="also write per-epoch curves as CSVs for `dvc plots show`")
    s.add_argument("--dvc-metrics-dir", type=Path,
                   help="also write <dir>/<task>/<method>.json (final val means), one row each in `dvc metrics show`")
    s.set_defaults(func=cmd_collect)

    s = sub.add_parser("report", help="figures, tables and the HTML/LaTeX report")
    s.add_argument("--summary", type=Path, default=Path("results/summary.csv"), help="from `clipbench collect`")
    s.add_argument("--out", type=Path, default=Path("report"), help="folder for index.html, report.tex (+ PDF), "
                   "claims.json and figures/")
    s.add_argument("--baselines", type=Path, default=Path("results/baselines"),
                   help="folder of <task>.json baselines from `clipbench baseline` (shown when present)")
    s.add_argument("--config-json", help="the resolved workflow config as JSON or a .json file (provenance: its hash and text)")
    s.add_argument("--configfile", action="append", default=[], help="or the config file(s), merged in order")
    s.add_argument("--manifests", nargs="*", type=Path, default=[], help="prepared datasets' manifest.json (their digests)")
    s.add_argument("--noise", type=Path, default=Path("results/noise"),
                   help="folder of <task>/noise.json gradient-noise outputs (shown when present)")
    s.add_argument("--heavytail", type=Path, default=Path("results/heavytail"),
                   help="folder of the convex check's summary.json and quantiles.png (shown when present)")
    s.add_argument("--tuning", type=Path, help="results/tuning: show the tuning (its */*/chosen.json files)")
    s.add_argument("--workers", type=int, default=1, help="processes that draw the figures (the workflow: the rule's threads)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("readme", help="write the README's demo tables (its <!-- clipbench:NAME --> blocks) from a run's outputs")
    s.add_argument("--readme", type=Path, default=Path("README.md"), help="the Markdown file whose blocks are rewritten")
    s.add_argument("--results", type=Path, default=Path("results"), help="the run's results folder")
    s.add_argument("--claims", type=Path, default=Path("report/claims.json"), help="the report's claims")
    s.add_argument("--other", type=Path, help="root of a second run of the same config (its results/ and "
                   "report/claims.json), e.g. on another machine: fills the 'variation' block")
    s.add_argument("--other-note", default="", help="how the second run differed, printed before its table")
    s.set_defaults(func=cmd_readme)

    s = sub.add_parser("jobserver", help="a local process that imports torch once and forks each clipbench command "
                       "the workflow runs here (the Snakefile starts and stops it)")
    s.add_argument("action", choices=["serve", "stop"], help="serve: listen (the Snakefile runs it in the background); "
                   "stop: ask the one at --socket to exit once its jobs are done")
    s.add_argument("--socket", help="its Unix socket (default: one per user and working directory, in the temp folder)")
    s.add_argument("--idle", type=float, default=120.0, help="serve: exit after this many seconds without a job")
    s.set_defaults(func=cmd_jobserver)

    s = sub.add_parser("bench", add_help=False, help="benchmarks and the cost estimate (`clipbench bench cost --help`, ...)")
    s.add_argument("what", nargs="?", choices=list(BENCHMARKS), help="the benchmark; its options: clipbench bench WHAT --help")
    s.set_defaults(func=None)



def main(argv: list[str] | None = None) -> int:
    """``clipbench ...``: in a child of the local job server when the workflow runs one
    ($CLIPBENCH_JOBSERVER), else here."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["jobserver"]:
        rc = jobserver.delegate(argv)
        if rc is not None:
            return rc
    return run(argv)


def run(argv: list[str]) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return cmd_bench(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.debug:
        os.environ["CLIPBENCH_DEBUG"] = "1"
    try:
        return args.func(args)
    except (ClipbenchError, FileNotFoundError) as exc:
        if os.environ.get("CLIPBENCH_DEBUG", "") not in ("", "0"):
            raise
        # The message names the file or key and says what to do; a traceback would bury it.
        print(f"clipbench {args.command}: {exc}\n(the traceback: clipbench --debug {args.command} ..., or "
              "CLIPBENCH_DEBUG=1)", file=sys.stderr)
        return 2 if isinstance(exc, (cfgmod.ConfigError, TuningError)) else 1


if __name__ == "__main__":
    sys.exit(main())
