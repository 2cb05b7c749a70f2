"""`python -m tuning {push,deploy,export,serve,bundle,import-adapter}`: the commands that take a run elsewhere (the
Hub, a Space, Ollama, an OpenAI-compatible server, a cluster) or bring one in. `tuning/cli.py` registers them and
catches their errors."""

from __future__ import annotations

import sys
from pathlib import Path

from tuning.runs.files import DEFAULT_RUNS_DIR
from tuning.runs.run import Run


def add_publish_parsers(commands) -> None:
    """push, export, serve, deploy, bundle and import-adapter, in `python -m tuning --help`'s order."""
    _add_push_parser(commands)
    _add_export_parser(commands)
    _add_serve_parser(commands)
    _add_deploy_parser(commands)
    _add_bundle_parser(commands)
    _add_import_parser(commands)


def command_push(args) -> int:
    """Push a run's adapter + card (optionally its dataset and merged model); --dry-run shows what would go."""
    from tuning.hub.push import plan_pushes, push_plans

    plans = plan_pushes(args.run, args.repo, dataset_repo=args.dataset, merged=args.merged)
    _print_plans(plans, with_cards=args.dry_run)
    if args.dry_run:
        return 0
    for url in push_plans(plans, private=args.private, progress=_print_progress):
        print(f"pushed: {url}")
    return 0


def _print_plans(plans, with_cards: bool) -> None:
    """Each repository's commit and files; with_cards: every README too (the dataset's is published as well)."""
    for plan in plans:
        print(f"{plan.repo_type} {plan.repo_id} -- commit '{plan.commit_message}':")
        for name, size in plan.describe():
            print(f"  {name}  ({size})")
    if with_cards:
        for plan in plans:
            print(f"\n--- README.md of {plan.repo_type} {plan.repo_id} ---\n{plan.card()}")


def _print_progress(done: int, total: int, what: str) -> None:
    print(f"[{done}/{total}] {what}", file=sys.stderr)


def _add_push_parser(commands) -> None:
    push = commands.add_parser("push", help="push a run's adapter and model card to the Hugging Face Hub",
                               description="The token comes from HF_TOKEN or `hf auth login`, never the command line.")
    push.add_argument("--run", required=True, help="run folder with an adapter")
    push.add_argument("--repo", required=True, help="model repository, USER/NAME")
    push.add_argument("--private", action="store_true", help="create the repositories private")
    push.add_argument("--dataset", metavar="USER/NAME", help="also push the run's train/validation rows there")
    push.add_argument("--merged", action="store_true",
                      help="also push the full model with the adapter merged in, to USER/NAME-merged")
    push.add_argument("--dry-run", action="store_true", help="print the files and the card; upload nothing")
    push.set_defaults(func=command_push)


def command_deploy(args) -> int:
    """Create/update the Kantele Space from spaces.yaml; --dry-run shows the plan (files, README, settings)."""
    from tuning.hub.space import deploy_space, plan_space_deploy

    # One plan, printed and then carried out: what --dry-run shows is what deploy does.
    plan = plan_space_deploy(args.space, with_run=args.with_run, set_token_secret=not args.no_token_secret)
    _print_plans([plan.push], with_cards=args.dry_run)
    print(f"\nspace {plan.space_id} settings:")
    for setting, value in plan.describe():
        print(f"  {setting}: {value}")
    if args.dry_run:
        return 0
    url = deploy_space(plan, private=args.private, progress=_print_progress)
    print(f"deployed: {url}")
    return 0


def _add_deploy_parser(commands) -> None:
    deploy = commands.add_parser("deploy", help="create or update the Kantele Space on the Hugging Face Hub",
                                 description="Settings come from spaces.yaml; the token from HF_TOKEN or "
                                             "`hf auth login`, never the command line.")
    deploy.add_argument("--space", required=True, metavar="USER/NAME", help="the Space's repository id")
    deploy.add_argument("--private", action="store_true", help="create the Space private")
    deploy.add_argument("--no-token-secret", action="store_true",
                        help="don't store your token as the Space's HF_TOKEN secret")
    deploy.add_argument("--with-run", metavar="RUN",
                        help="also upload a finished run (its folder, or its id under ./runs or KANTELE_HOME/runs) "
                             "to bundled_runs/, trained on the Space's base model")
    deploy.add_argument("--dry-run", action="store_true",
                        help="print the files, the README and the Space's settings; upload nothing")
    deploy.set_defaults(func=command_deploy)


def command_export(args) -> int:
    """Merge a run's adapter into its base; write the merged folder, a GGUF and an Ollama Modelfile."""
    from tuning.portable.export import export_run

    result = export_run(args.run, args.out, dtype=args.dtype, skip_gguf=args.skip_gguf)
    print("written:")
    for path in result.files:
        size = f" ({path.stat().st_size / 1e6:.1f} MB, {result.dtype})" if path == result.gguf else ""
        print(f"  {path}{'/' if path.is_dir() else ''}{size}")
    for fallback in result.gguf_fallbacks:
        print(f"  F16 instead of {result.dtype}: {fallback}")
    timing = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in result.seconds.items())
    print(f"time: {timing}")
    if args.verify and result.gguf:
        _print_gguf_check(args.run, result, args.verify)
    if result.modelfile:
        print(f"\nrun it with Ollama:\n  cd {result.out_dir} && ollama create {result.name} -f {result.modelfile.name}"
              f"\n  ollama run {result.name}")
    return 0


def _print_gguf_check(run_dir: str, result, how_many: int) -> None:
    """Greedy answers of the merged model and of the GGUF (read back by transformers) to the run's held-out questions."""
    from tuning.data.examples import read_jsonl
    from tuning.portable.gguf_check import verify_gguf

    run = Run(run_dir)
    questions = [row["messages"][-2]["content"] for row in read_jsonl(run.validation_file)[:how_many]]
    check = verify_gguf(result.merged_dir, result.gguf, questions, system_prompt=run.recipe().data.system_prompt)
    same = sum(equal for *_, equal in check.answers)
    print(f"\nGGUF check: {same}/{len(check.answers)} greedy answers equal to the merged model's; tokenizer "
          f"{'matches' if not check.token_mismatches else 'DIFFERS on ' + str(len(check.token_mismatches)) + ' probes'}; "
          f"chat prompts {'identical' if check.prompts_equal else 'DIFFER'}")
    for question, merged, gguf, equal in check.answers:
        if not equal:
            print(f"  differs: {question}\n    merged: {merged}\n    gguf:   {gguf}")


def _add_export_parser(commands) -> None:
    from tuning.portable.gguf import DEFAULT_GGUF_DTYPE, GGUF_DTYPES  # no heavy imports: only names

    export = commands.add_parser("export", help="merge a run's adapter into its base model; write GGUF + Ollama Modelfile",
                                 description="Writes OUT/merged/ (safetensors), OUT/NAME.gguf, OUT/Modelfile, OUT/README.md.")
    export.add_argument("--run", required=True, help="run folder with an adapter")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--dtype", choices=list(GGUF_DTYPES), default=DEFAULT_GGUF_DTYPE,
                        help="GGUF weight type: q8_0, q5_0, q4_0 quantize the matrices with the gguf package's own "
                             "quantizers (q8_0: about half the f16 size); norms stay f32 (default: f16)")
    export.add_argument("--skip-gguf", action="store_true", help="only the merged safetensors folder")
    export.add_argument("--verify", type=int, default=0, metavar="N",
                        help="read the GGUF back and compare greedy answers to N held-out questions with the merged model")
    export.set_defaults(func=command_export)


def command_serve(args) -> int:
    """Serve the run's merged model over an OpenAI-compatible API until stopped (Ctrl-C)."""
    from tuning.portable.serve import serve_run

    return serve_run(args.run, host=args.host, port=args.port, merged_dir=args.merged_dir, device=args.device,
                     announce=lambda line: print(line, flush=True))


def _add_serve_parser(commands) -> None:
    serve = commands.add_parser("serve", help="serve a run over an OpenAI-compatible API (transformers serve)",
                                description="Merges the run's adapter into its base and serves it with `transformers "
                                            "serve`: POST /v1/chat/completions with model=<the run's name>. A chat "
                                            "without a system turn gets the system prompt the run trained with.")
    serve.add_argument("--run", required=True, help="run folder with an adapter")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda:0...")
    serve.add_argument("--merged-dir", metavar="DIR",
                       help="keep the merged model in DIR/<run name> and reuse it next time (default: a temporary "
                            "folder, removed when the server stops)")
    serve.set_defaults(func=command_serve)


def command_bundle(args) -> int:
    """Pack a run to train unchanged on a cluster: a zip (--out *.zip) or a folder."""
    from tuning.portable.bundle import plan_bundle, write_bundle_dir, write_bundle_zip

    out = Path(args.out)
    as_zip = out.suffix.lower() == ".zip"
    bundle = plan_bundle(args.run)
    written = write_bundle_zip(bundle, out) if as_zip else write_bundle_dir(bundle, out)
    _print_notes(bundle.notes)
    unpack = f"unzip {written.name} && cd {bundle.name}" if as_zip else f"cd {written}"
    print(f"written: {written}\non the cluster: {unpack}, then see README.txt (N=4 bash train.sh, or sbatch train.sbatch)")
    return 0


def _print_notes(notes: list[str]) -> None:
    """What the person should know about a result, on stderr beside the result itself."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _add_bundle_parser(commands) -> None:
    bundle = commands.add_parser("bundle", help="pack a run (recipe, exact data, code, launch scripts) for a cluster",
                                 description="The bundle trains with `accelerate launch` on 1..N GPUs (train.sh) or "
                                             "SLURM nodes (train.sbatch); README.txt inside says how.")
    bundle.add_argument("--run", required=True, help="run folder (its config.yaml and data/ are bundled)")
    bundle.add_argument("--out", required=True, help="FILE.zip, or a folder to create")
    bundle.set_defaults(func=command_bundle)


def command_import_adapter(args) -> int:
    """Add an adapter trained elsewhere (a zip or folder of the adapter or its whole run) as a finished run."""
    from tuning.portable.adapter_import import import_adapter

    imported = import_adapter(args.source, args.runs)
    _print_notes(imported.notes)
    print(f"imported: {imported.run_dir} (base model {imported.base_model})")
    return 0


def _add_import_parser(commands) -> None:
    importer = commands.add_parser("import-adapter", help="add an adapter trained elsewhere as a finished run",
                                   description="Weights must be adapter_model.safetensors; the base model must "
                                               "load on this machine.")
    importer.add_argument("--source", required=True, help="a .zip or folder: the adapter folder or its whole run")
    importer.add_argument("--runs", default=str(DEFAULT_RUNS_DIR), help="runs folder to add it to (default: runs)")
    importer.set_defaults(func=command_import_adapter)
