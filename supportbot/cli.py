"""The `supportbot` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from supportbot.service_auth import ServiceTokenMissing
from supportbot.settings import DEFAULT_PORTS, GatewaySettings, NlpSettings


class CliError(Exception):
    """Something the operator must fix; the command prints it and exits with 2."""


def existing_database(url: str) -> str:
    """`url`, unless it names a SQLite file that does not exist: the CLI never starts a second database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if (parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:")
            and not Path(parsed.database).exists()):
        raise CliError(
            f"no supportbot database at {parsed.database}. `supportbot up` (make run) keeps it in its data "
            "directory, ./.supportbot where it was started: run this command from that directory, or set "
            "SUPPORTBOT_DATA_DIR (or DATABASE_URL) to the running system's; `supportbot migrate` creates a new one")
    return url


async def _require_tenant(sessions: Any, tenant_id: str) -> None:
    from gateway.storage import get_tenant

    async with sessions() as session:
        if await get_tenant(session, tenant_id=tenant_id) is None:
            raise CliError(f"unknown tenant {tenant_id!r}: create it with `supportbot tenants create {tenant_id}`")


def _app_factory(name: str) -> Callable[[], FastAPI]:
    if name == "gateway":
        from gateway.app import create_app
    elif name == "nlp":
        from services.nlp.app import create_app
    elif name == "dialogue":
        from services.dialogue.app import create_app
    else:
        from services.llm.app import create_app
    return create_app


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    app = _app_factory(args.service)()
    uvicorn.run(app, host=args.host, port=args.port or DEFAULT_PORTS[args.service], log_config=None,
                access_log=False, timeout_graceful_shutdown=10)
    return 0


async def _prepare(settings: GatewaySettings) -> str | None:
    """Migrate the database and create tenant `demo` on first start; return a key made here."""
    from gateway.tenants import bootstrap_demo_tenant
    from supportbot.db import open_database, session_factory

    url = settings.resolved_database_url
    engine = open_database(url)
    try:
        key = settings.bootstrap_api_key.get_secret_value() if settings.bootstrap_api_key else None
        return await bootstrap_demo_tenant(session_factory(engine), api_key=key)
    finally:
        await engine.dispose()


def cmd_up(args: argparse.Namespace) -> int:
    from supportbot.runner import connect_host, run_all

    created_key = asyncio.run(_prepare(GatewaySettings()))
    url = f"http://{connect_host(args.host)}:{args.base_port}"
    announced = False

    def announce() -> None:
        """All four are ready: only now does the `Try:` line work."""
        nonlocal announced
        announced = True
        if created_key:
            print(f"Created tenant 'demo'. Its API key is shown only this once:\n\n    {created_key}\n\n"
                  f"Try: curl -s -X POST {url}/v1/conversations -H 'Authorization: Bearer {created_key}'\n",
                  flush=True)
        else:
            print(f"Try: curl -s -X POST {url}/v1/conversations -H \"Authorization: Bearer $KEY\"  "
                  "(KEY: the demo key printed at the first start)\n", flush=True)

    code = run_all(host=args.host, base_port=args.base_port, ready_timeout_s=args.ready_timeout, on_ready=announce)
    if created_key and not announced:
        # It never came up, but the tenant exists now and a later start creates none: the key must not be lost.
        print(f"Created tenant 'demo'. Its API key is shown only this once:\n\n    {created_key}\n", flush=True)
    return code


def cmd_prepare(args: argparse.Namespace) -> int:
    from services.nlp.prepare import run_command

    return run_command(json_progress=args.json_progress)


def cmd_migrate(_: argparse.Namespace) -> int:
    from supportbot.db import upgrade_database

    upgrade_database(GatewaySettings().resolved_database_url)
    print("database is up to date")
    return 0


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _positive_number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {value!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not {value}")
    return number


def _share(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {number}")
    return number


def cmd_intents_train(args: argparse.Namespace) -> int:
    from services.nlp.classifier import IntentClassifier, read_examples
    from services.nlp.encoder import EncoderUnavailable
    from services.nlp.encoder_tuning import TuningOptions

    if args.out is None and args.tenant is None:
        print("supportbot: give --out DIR or --tenant T", file=sys.stderr)
        return 2
    out = args.out or NlpSettings().data_dir / "models" / "tenants" / args.tenant
    try:
        texts, labels = read_examples(args.data)
    except (OSError, ValueError) as exc:
        print(f"supportbot: {exc}", file=sys.stderr)
        return 2
    tuning = None
    if args.encoder == "tuned":
        chosen: dict[str, Any] = {} if args.epochs is None else {"epochs": args.epochs}
        if args.tuning_budget is not None:
            chosen["time_budget_s"] = args.tuning_budget or None
        tuning = TuningOptions(**chosen)
    options: dict[str, Any] = {"name": args.name or args.data.stem}
    if args.oos_recall is not None:
        options["out_of_scope_recall"] = args.oos_recall
    try:
        model = IntentClassifier.train(texts, labels, tuning=tuning, **options)
    except EncoderUnavailable as exc:
        print(f"supportbot: cannot fine-tune the encoder ({exc}); training on the shared ones", file=sys.stderr)
        model = IntentClassifier.train(texts, labels, **options)
    model.save(out)
    meta = model.meta
    encoder = (meta.get("encoder") or {}).get("name", "none (TF-IDF only)")
    print(f"trained {len(set(labels))} intents on {len(texts)} examples in {meta['train_seconds']} s "
          f"(sentence encoder: {encoder}); out-of-scope threshold {model.threshold:.3f}; saved to {out}")
    fast = meta.get("fast_path")
    if fast and fast["threshold"] is not None:
        print(f"words-only fast path (for CPUs too slow for the encoder): from probability {fast['threshold']}, "
              f"{fast['held_out']['answered_share']:.0%} of held-out rows at the full model's accuracy or better")
    return 0


def cmd_intents_eval(args: argparse.Namespace) -> int:
    import json

    from services.nlp.classifier import IntentClassifier, read_examples
    from services.nlp.encoder import EncoderUnavailable
    from services.nlp.evaluation import evaluate, format_report

    try:
        NlpSettings()  # NLP_LATENCY_PLAN, read at the first prediction, named here when it is wrong
        model = IntentClassifier.load(args.model)
        texts, labels = read_examples(args.data)
    except (OSError, ValueError, EncoderUnavailable) as exc:
        print(f"supportbot: {exc}", file=sys.stderr)
        return 2
    result = evaluate(model, texts, labels)
    print(json.dumps(result, ensure_ascii=False) if args.json else format_report(result))
    return 0


def cmd_kb_ingest(args: argparse.Namespace) -> int:
    from services.dialogue.ingest import UnsupportedDocument
    from services.dialogue.kb import ingest
    from supportbot.db import open_database, session_factory
    from supportbot.settings import DialogueSettings

    url = existing_database(DialogueSettings().resolved_database_url)

    async def run() -> int:
        engine = open_database(url)
        try:
            sessions = session_factory(engine)
            await _require_tenant(sessions, args.tenant)
            report = await ingest(sessions, tenant_id=args.tenant, paths=args.paths)
        finally:
            await engine.dispose()
        print(f"tenant {args.tenant}: {len(report.added)} documents ingested ({report.chunks} chunks), "
              f"{len(report.unchanged)} unchanged" + (f", {len(report.failed)} failed" if report.failed else ""))
        for path in report.added:
            print(f"  + {path}")
        for path, why in report.failed:
            print(f"supportbot: {path}: not ingested: {why}", file=sys.stderr)
        if report.failed:
            return 1 if report.added or report.unchanged else 2
        return 0

    try:
        return asyncio.run(run())
    except (OSError, UnsupportedDocument) as exc:
        print(f"supportbot: {exc}", file=sys.stderr)
        return 2


def cmd_eval_conversations(args: argparse.Namespace) -> int:
    import json

    from pydantic import ValidationError

    from supportbot.conversation_eval import load_suite, run_suite, summary

    try:
        suite = load_suite(args.file)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"supportbot: {args.file}: {exc}", file=sys.stderr)
        return 2
    result = summary(run_suite(suite, url=args.url, key=args.key))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for name, failures in result["failures"].items():
            print(f"FAIL {name}")
            for failure in failures:
                print(f"     {failure}")
        print(f"{result['conversations_passed']}/{result['conversations']} conversations passed "
              f"({result['pass_rate']:.1%}), {result['turns_passed']}/{result['turns']} turns")
    return 0 if result["conversations_passed"] == result["conversations"] else 1


def _llm_sessions() -> tuple[object, object]:
    from supportbot.db import open_database, session_factory
    from supportbot.settings import LlmSettings

    url = existing_database(LlmSettings().resolved_database_url)
    engine = open_database(url)
    return engine, session_factory(engine)


def cmd_usage(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from services.llm.storage import usage_summary

    try:
        since = datetime.fromisoformat(args.since) if args.since else None
    except ValueError:
        print(f"supportbot: --since {args.since!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)

    async def read() -> list[dict[str, object]]:
        engine, sessions = _llm_sessions()
        try:
            await _require_tenant(sessions, args.tenant)
            async with sessions() as session:  # type: ignore[operator]
                return await usage_summary(session, args.tenant, since)
        finally:
            await engine.dispose()  # type: ignore[attr-defined]

    rows = [{"provider": r["provider"], "model": r["model"], "requests": int(r["requests"]),
             "cached_requests": int(r["cached_requests"] or 0), "prompt_tokens": int(r["prompt_tokens"] or 0),
             "completion_tokens": int(r["completion_tokens"] or 0), "cost_usd": float(r["cost_usd"] or 0)}
            for r in asyncio.run(read())]
    totals = {name: sum(r[name] for r in rows) for name in
              ("requests", "cached_requests", "prompt_tokens", "completion_tokens", "cost_usd")}
    totals["cost_usd"] = round(float(totals["cost_usd"]), 8)
    if args.json:
        print(json.dumps({"tenant": args.tenant, "since": since.isoformat() if since else None,
                          "totals": totals, "by_provider_model": rows}))
        return 0
    print(f"usage of tenant {args.tenant}" + (f" since {since.date()}" if since else ""))
    header = f"{'provider':<10} {'model':<28} {'requests':>8} {'cached':>7} {'prompt':>10} {'completion':>10} {'cost_usd':>12}"
    print(header)
    for r in [*rows, {"provider": "total", "model": "", **totals}]:
        print(f"{r['provider']:<10} {r['model']:<28} {r['requests']:>8} {r['cached_requests']:>7} "
              f"{r['prompt_tokens']:>10} {r['completion_tokens']:>10} {r['cost_usd']:>12.6f}")
    return 0


def cmd_budget_set(args: argparse.Namespace) -> int:
    from decimal import Decimal

    from services.llm.storage import set_budget
    from supportbot.db import transaction

    if not 1 <= args.soft_pct <= 100:
        print("supportbot: --soft-pct must be between 1 and 100", file=sys.stderr)
        return 2

    async def write() -> None:
        engine, sessions = _llm_sessions()
        try:
            await _require_tenant(sessions, args.tenant)
            async with transaction(sessions) as session:  # type: ignore[arg-type]
                await set_budget(session, tenant_id=args.tenant, monthly_tokens=args.monthly_tokens,
                                 monthly_usd=Decimal(str(args.monthly_usd)) if args.monthly_usd is not None else None,
                                 soft_pct=args.soft_pct)
        finally:
            await engine.dispose()  # type: ignore[attr-defined]

    asyncio.run(write())
    print(f"budget of tenant {args.tenant}: monthly_tokens={args.monthly_tokens} monthly_usd={args.monthly_usd} "
          f"soft at {args.soft_pct}%")
    return 0


def cmd_budget_show(args: argparse.Namespace) -> int:
    import json

    from services.llm.budgets import month_start
    from services.llm.storage import get_budget, month_to_date

    async def read() -> dict[str, object]:
        engine, sessions = _llm_sessions()
        try:
            await _require_tenant(sessions, args.tenant)
            async with sessions() as session:  # type: ignore[operator]
                budget = await get_budget(session, args.tenant)
                tokens, cost = await month_to_date(session, args.tenant, month_start())
        finally:
            await engine.dispose()  # type: ignore[attr-defined]
        return {"tenant": args.tenant,
                "monthly_tokens": budget.monthly_tokens if budget else None,
                "monthly_usd": float(budget.monthly_usd) if budget and budget.monthly_usd is not None else None,
                "soft_pct": budget.soft_pct if budget else None,
                "month_to_date": {"tokens": tokens, "cost_usd": float(cost)}}

    print(json.dumps(asyncio.run(read())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supportbot", description="Self-hosted customer-support chatbot.")
    commands = parser.add_subparsers(dest="command", required=True)

    from supportbot.runner import DEFAULT_READY_TIMEOUT_S

    up = commands.add_parser("up", help="run the gateway and the nlp, dialogue and llm services")
    up.add_argument("--base-port", type=int, default=8000, help="gateway port; the others use the next three")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--ready-timeout", type=_seconds, default=DEFAULT_READY_TIMEOUT_S, metavar="SECONDS",
                    help="give up when no service that is not ready yet has moved (status, preparation step or "
                         f"fraction) for this long (default {DEFAULT_READY_TIMEOUT_S:g}; 0: wait as long as it takes)")
    up.set_defaults(func=cmd_up)

    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=sorted(DEFAULT_PORTS))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    prepare = commands.add_parser(
        "prepare", help="export the sentence encoder and train the default intent model, once (SUPPORTBOT_MODELS_DIR)")
    prepare.add_argument("--json-progress", action="store_true",
                         help="progress as one JSON object a line on stdout ({\"step\", \"fraction\"}), for a parent "
                              "process")
    prepare.set_defaults(func=cmd_prepare)

    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.set_defaults(func=cmd_migrate)

    from gateway.cli import add_commands as add_tenant_and_key_commands

    add_tenant_and_key_commands(commands)  # tenants, keys

    intents = commands.add_parser("intents", help="train and evaluate intent models").add_subparsers(
        dest="action", required=True)
    train = intents.add_parser("train", help="train a model from a text,category CSV")
    train.add_argument("--data", type=Path, required=True)
    train.add_argument("--out", type=Path, default=None, help="model directory to write")
    train.add_argument("--tenant", default=None, help="write the tenant's model, served by the nlp service")
    train.add_argument("--name", default=None)
    train.add_argument("--encoder", choices=("tuned", "shared"), default="tuned",
                       help="fine-tune a sentence encoder for this model (default; needs torch, minutes on a CPU; "
                            "a shared encoder that scores clearly higher held out is kept instead) or only "
                            "choose between the shared, frozen ones, MiniLM and USE multilingual (seconds)")
    train.add_argument("--epochs", type=_positive_int, default=None, help="fine-tuning epochs (default 4)")
    train.add_argument("--tuning-budget", type=_seconds, default=None, metavar="SECONDS",
                       help="fine-tuning ends its schedule early, after fewer epochs, rather than run longer than "
                            "this (default 250; 0: no limit)")
    train.add_argument("--oos-recall", type=_share, default=None,
                       help="out-of-scope recall the threshold aims for on held-out rows (default 0.85)")
    train.set_defaults(func=cmd_intents_train)
    evaluate = intents.add_parser("eval", help="score a model on a text,category CSV")
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")
    evaluate.set_defaults(func=cmd_intents_eval)

    kb = commands.add_parser("kb", help="knowledge base").add_subparsers(dest="action", required=True)
    kb_ingest = kb.add_parser("ingest", help="ingest Markdown, HTML, text and Q&A CSV files for a tenant")
    kb_ingest.add_argument("--tenant", required=True)
    kb_ingest.add_argument("paths", nargs="+", type=Path, help="files or folders")
    kb_ingest.set_defaults(func=cmd_kb_ingest)

    evaluate_cmd = commands.add_parser("eval", help="evaluate a running system").add_subparsers(
        dest="action", required=True)
    conversations = evaluate_cmd.add_parser("conversations", help="run scripted conversations through the gateway")
    conversations.add_argument("file", type=Path)
    conversations.add_argument("--url", default="http://127.0.0.1:8000")
    conversations.add_argument("--key", required=True, help="the tenant's API key")
    conversations.add_argument("--json", action="store_true")
    conversations.set_defaults(func=cmd_eval_conversations)

    usage = commands.add_parser("usage", help="token usage and cost of a tenant")
    usage.add_argument("--tenant", required=True)
    usage.add_argument("--since", default=None, help="YYYY-MM-DD (UTC) or an ISO timestamp")
    usage.add_argument("--json", action="store_true", help="one JSON object on stdout")
    usage.set_defaults(func=cmd_usage)

    budget = commands.add_parser("budget", help="per-tenant monthly LLM budgets").add_subparsers(
        dest="action", required=True)
    budget_set = budget.add_parser("set", help="set a tenant's monthly limits (omitted limits are removed)")
    budget_set.add_argument("--tenant", required=True)
    budget_set.add_argument("--monthly-tokens", type=_positive_int, default=None)
    budget_set.add_argument("--monthly-usd", type=_positive_number, default=None)
    budget_set.add_argument("--soft-pct", type=int, default=80, help="warn from this percentage on (default 80)")
    budget_set.set_defaults(func=cmd_budget_set)
    budget_show = budget.add_parser("show", help="a tenant's budget and month-to-date usage, as JSON")
    budget_show.add_argument("--tenant", required=True)
    budget_show.set_defaults(func=cmd_budget_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"supportbot: {exc}", file=sys.stderr)
        return 2
    except (ValidationError, ServiceTokenMissing) as exc:  # settings refused (a placeholder, a missing secret)
        print(f"supportbot: {_settings_problem(exc)}", file=sys.stderr)
        return 2


def _settings_problem(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}" if where else error["msg"])
    return "; ".join(problems)


if __name__ == "__main__":
    # `python -m supportbot.cli`: run the module the commands import (gateway.cli raises *its* CliError), not
    # this second copy of it named __main__.
    from supportbot.cli import main as imported_main

    sys.exit(imported_main())
