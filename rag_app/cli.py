"""The `rag-app` command line: thin; errors become one-line messages and exit codes here.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, 3 partial (inputs skipped).
``--json`` prints one JSON object on stdout; logs and progress go to stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from rag_app.errors import RagAppError

log = logging.getLogger("rag_app")

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
_NOISY = ("httpx", "urllib3", "sentence_transformers", "pymilvus", "milvus_lite", "filelock")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("rag_app").setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class Ctx:
    def __init__(self, profile: str | None, overrides: dict[str, Any], verbose: int, quiet: bool):
        self.profile, self.overrides, self.verbose, self.quiet = profile, overrides, verbose, quiet
        self._app: Any = None

    def settings(self, **extra: Any) -> Any:
        from rag_app.settings import load_settings

        return load_settings(self.profile, {**self.overrides, **extra})

    def app(self, **extra: Any) -> Any:
        if self._app is None:
            from rag_app.app import RagApp

            self._app = RagApp(self.settings(**extra))
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


pass_ctx = click.make_pass_decorator(Ctx)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into `error: ...` and their exit code; unknown ones into exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        state = ctx.find_object(Ctx)
        verbose = state.verbose if state else 0
        try:
            return fn(*args, **kwargs)
        except RagAppError as exc:
            if verbose:
                log.exception("details")
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; everything already written is kept", err=True)
            ctx.exit(130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            if verbose:
                log.exception("unexpected failure")
            click.echo(
                f"error: {type(exc).__name__}: {exc} (run with -v for the traceback)", err=True
            )
            ctx.exit(EXIT_RUNTIME)

    return wrapper


# ------------------------------------------------------------------ progress


class BarProgress:
    """A rich progress bar on stderr: files, chunks, chunks/s."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks · {task.fields[files]} files · {task.fields[rate]} chunks/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None
        self._files_total = 0
        self._files = 0
        self._t0 = 0.0

    def start(self, files: int, chunks: int) -> None:
        self._files_total, self._t0 = files, time.perf_counter()
        self._progress.start()
        self._task = self._progress.add_task(
            "ingest", total=max(chunks, 1), files=f"0/{files}", rate="-"
        )

    def advance(self, files: int = 0, chunks: int = 0) -> None:
        self._files += files
        done = self._progress.tasks[0].completed + chunks
        rate = done / max(time.perf_counter() - self._t0, 1e-9)
        self._progress.update(
            self._task,
            advance=chunks,
            files=f"{self._files}/{self._files_total}",
            rate=f"{rate:.0f}",
        )

    def close(self) -> None:
        self._progress.stop()


# ------------------------------------------------------------------ commands


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""Examples:

\b
  rag-app models prepare
  rag-app ingest docs/
  rag-app query "What do the parameters for HNSW mean?"
  rag-app retrieve "HNSW parameters" --top-k 5 --where "source^=reference/" --json
  RAG_PROFILE=gpu rag-app config show
""",
)
@click.option("--profile", "-p", envvar="RAG_PROFILE", help="Settings profile (config/NAME.yaml).")
@click.option("--home", envvar="RAG_HOME", help="Data directory (default ./.rag).")
@click.option("--collection", "-c", help="Milvus collection (overrides milvus.collection).")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a setting, e.g. llm.max_tokens=64.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress and only warnings on stderr.")
@click.version_option(package_name="rag_app")
@click.pass_context
def main(
    ctx: click.Context,
    profile: str | None,
    home: str | None,
    collection: str | None,
    sets: tuple[str, ...],
    verbose: int,
    quiet: bool,
) -> None:
    """RAG over your documents with LlamaIndex, Milvus and vLLM."""
    _setup_logging(verbose, quiet)
    if home:
        os.environ["RAG_HOME"] = home
    overrides = _parse_set(sets)
    if collection:
        overrides["milvus.collection"] = collection
    state = Ctx(profile, overrides, verbose, quiet)
    ctx.obj = state
    ctx.call_on_close(state.close)


@main.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--prune/--no-prune",
    default=True,
    show_default=True,
    help="Remove chunks of files that are gone from PATH.",
)
@click.option("--strict", is_flag=True, help="Fail before writing anything if any file is bad.")
@click.option(
    "--recreate", is_flag=True, help="Drop the collection first (e.g. after a model change)."
)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out matching files.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
@handle_errors
def ingest(
    c: Ctx,
    path: str,
    prune: bool,
    strict: bool,
    recreate: bool,
    exclude: tuple[str, ...],
    as_json: bool,
) -> None:
    """Ingest a folder (or file): .md .txt .html .htm .pdf, incrementally.

    Re-running on an unchanged folder embeds nothing; changed files are replaced and (with
    --prune, the default) files gone from PATH are removed. Exit codes: 0 all ingested, 3 some
    files skipped (listed on stderr; with --strict nothing is written), 2 usage, 1 failure.
    """
    extra = {"ingest.exclude": list(exclude)} if exclude else {}
    from rag_app.readers import check_root

    check_root(path)
    app = c.app(**extra)
    progress = BarProgress() if (sys.stderr.isatty() and not c.quiet) else None
    report = app.ingest(path, prune=prune, strict=strict, recreate=recreate, progress=progress)
    if as_json:
        emit_json(report.to_dict())
    else:
        if not c.quiet:
            click.echo(report.summary(), err=True)
        # Even --quiet lists these: they are what a cron job's owner has to act on.
        for skipped in report.skipped:
            click.echo(f"skipped {skipped.source}: {skipped.reason}", err=True)
    sys.exit(report.exit_code)


def _retrieval_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--where",
        "-w",
        multiple=True,
        help="Metadata filter, e.g. 'source^=guides/' or 'file_type=md'.",
    )(fn)
    fn = click.option(
        "--mode",
        type=click.Choice(["dense", "bm25", "hybrid"]),
        help="Retrieval mode (default from settings).",
    )(fn)
    fn = click.option("--top-k", "-k", type=click.IntRange(min=1), help="Chunks to retrieve.")(fn)
    return fn


@main.command()
@click.argument("question")
@_retrieval_options
@click.option("--json", "as_json", is_flag=True, help='Print {"answer", "sources"} as JSON.')
@click.option("--show-prompt", is_flag=True, help="Also print the prompt sent to the LLM.")
@pass_ctx
@handle_errors
def query(
    c: Ctx,
    question: str,
    top_k: int | None,
    mode: str | None,
    where: tuple[str, ...],
    as_json: bool,
    show_prompt: bool,
) -> None:
    """Answer QUESTION from the ingested documents, with sources."""
    answer = c.app().query(question, top_k=top_k, mode=mode, where=where or None)
    if as_json:
        emit_json(answer.to_dict(prompt=show_prompt))
        return
    if show_prompt:
        click.echo(click.style("prompt:", bold=True) + "\n" + answer.prompt)
    click.echo(answer.answer or "(the model returned no text)")
    click.echo("\n" + click.style("sources:", bold=True))
    for i, src in enumerate(answer.sources, 1):
        score = "" if src.score is None else f" (score {src.score:.3f})"
        click.echo(f"  [{i}] {src.source}{score}")


@main.command()
@click.argument("question")
@_retrieval_options
@click.option("--json", "as_json", is_flag=True, help='Print {"question", "sources"} as JSON.')
@pass_ctx
@handle_errors
def retrieve(
    c: Ctx,
    question: str,
    top_k: int | None,
    mode: str | None,
    where: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show the chunks retrieved for QUESTION (no LLM)."""
    chunks = c.app().retrieve(question, top_k=top_k, mode=mode, where=where or None)
    if as_json:
        emit_json({"question": question, "sources": [s.to_dict() for s in chunks]})
        return
    for i, src in enumerate(chunks, 1):
        score = "" if src.score is None else f"{src.score:.3f}"
        click.echo(click.style(f"[{i}] {src.source}  {score}", bold=True))
        click.echo("    " + src.text.replace("\n", "\n    ")[:600] + "\n")


@main.group()
def models() -> None:
    """Prepare the models a profile needs (offline)."""


@models.command("prepare")
@click.option("--force", is_flag=True, help="Convert again even if already prepared.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def models_prepare(c: Ctx, force: bool, as_json: bool) -> None:
    """Locate packaged weights and convert the packaged LLM to safetensors (once)."""
    from rag_app.models import prepare_models

    settings = c.settings()
    say = (lambda msg: None) if (as_json or c.quiet) else (lambda msg: click.echo(msg, err=True))
    out = prepare_models(settings, force=force, report=say)
    if as_json:
        emit_json(out)


@main.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def config_show(c: Ctx, as_json: bool) -> None:
    """Print the active settings (secrets redacted)."""
    settings = c.settings()
    data = settings.redacted()
    if as_json:
        emit_json(data)
    else:
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


@config_group.command("profiles")
@handle_errors
def config_profiles() -> None:
    """List the available profiles."""
    from rag_app.settings import available_profiles

    for name in available_profiles():
        click.echo(name)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def collections(c: Ctx, as_json: bool) -> None:
    """List collections with chunk and document counts."""
    from rag_app.app import RagApp

    rows = RagApp(c.settings()).collections()
    if as_json:
        emit_json({"collections": rows})
        return
    if not rows:
        click.echo("no collections")
    for r in rows:
        click.echo(
            f"{r['collection']:<30} {r['documents']:>7} docs "
            f"{r['chunks']:>9} chunks  dim={r['dim']}"
        )


@main.command()
@click.option("--source", required=True, help="Source path as stored (relative to its root).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def delete(c: Ctx, source: str, as_json: bool) -> None:
    """Remove one document's chunks from the collection."""
    removed = c.app().delete(source)
    if as_json:
        emit_json({"source": source, "chunks_deleted": removed})
    else:
        click.echo(
            f"deleted {removed} chunks of {source}" if removed else f"no chunks for {source}"
        )
    if not removed:
        sys.exit(EXIT_RUNTIME)


@main.command()
@click.option("--host", default=None, help="Bind address (server.host; default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (server.port; default 8000).")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Serve on a non-loopback host without RAG_API_TOKEN (trusted networks only).",
)
@pass_ctx
@handle_errors
def serve(c: Ctx, host: str | None, port: int | None, allow_remote: bool) -> None:
    """Serve the HTTP API (FastAPI + uvicorn): /v1/query, /v1/retrieve, /v1/chat/completions,
    /v1/ingest, /healthz, /readyz, /metrics. See docs/serving.md.

    \b
    Examples:
      rag-app serve                                   # http://127.0.0.1:8000
      rag-app -p server serve --port 8080             # vllm serve + Milvus server backends
      RAG_API_TOKEN=s3cret rag-app serve --host 0.0.0.0
    """
    from rag_app.server import serve as run_server

    settings = c.settings()
    run_server(
        settings,
        host or settings.server.host,
        settings.server.port if port is None else port,
        allow_remote=allow_remote,
        log_level="debug" if c.verbose > 1 else ("warning" if c.quiet else "info"),
    )


@main.command()
@click.option(
    "--corpus", required=True, type=click.Path(path_type=str), help="Folder (or file) to ingest."
)
@click.option(
    "--questions",
    required=True,
    type=click.Path(path_type=str),
    help='JSONL, one {"question": ...} per line (other keys ignored).',
)
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N questions.")
@click.option(
    "--generate-limit",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Questions used for the generation comparison.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Rounds over the questions for retrieval latency.",
)
@click.option("--no-generate", is_flag=True, help="Compare ingestion and retrieval only.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG chart.")
@click.option(
    "--save", "save_path", type=click.Path(dir_okay=False), help="Also write the JSON report here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_ctx
@handle_errors
def compare(
    c: Ctx,
    corpus: str,
    questions: str,
    limit: int | None,
    generate_limit: int,
    repeat: int,
    no_generate: bool,
    plot_path: str | None,
    save_path: str | None,
    as_json: bool,
) -> None:
    """Run rag_app and the hand-rolled tutorial pipeline side by side on one corpus.

    Both ingest CORPUS into their own collections (<collection>_compare and
    <collection>_compare_baseline, recreated each run), answer the same questions, and the
    report gives chunk parity, retrieval agreement, ingestion and retrieval speed, and
    batched vs one-by-one generation through one shared vLLM engine.

    \b
    Example:
      rag-app compare --corpus docs/ --questions questions.jsonl --plot compare.png
    """
    from rag_app import compare as cmp
    from rag_app.readers import check_root

    check_root(corpus)
    qs = cmp.load_questions(questions, limit)
    settings = c.settings()
    quiet = c.quiet

    def say(msg: str) -> None:
        if not quiet:
            click.echo(f"compare: {msg}", err=True)

    progress = BarProgress() if (sys.stderr.isatty() and not quiet) else None
    report = cmp.run_compare(
        settings,
        corpus,
        qs,
        generate=not no_generate,
        generate_limit=generate_limit,
        repeat=repeat,
        say=say,
        ingest_progress=progress,
    )
    report["goals"] = cmp.goal_checks(report)
    if plot_path:
        report["plot"] = str(cmp.plot(report, plot_path))
        say(f"plot written to {plot_path}")
    if save_path:
        from pathlib import Path

        Path(save_path).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        say(f"report written to {save_path}")
    if as_json:
        emit_json(report)
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(cmp.render_table(report))
    gen = report.get("generation")
    if gen:
        for item in gen["answers"]:
            console.print("[bold]Q:[/bold] " + escape(item["question"]), highlight=False)
            console.print(f"  rag_app:     {item[cmp.RAG]}", highlight=False, markup=False)
            console.print(f"  hand-rolled: {item[cmp.BASE]}", highlight=False, markup=False)


def _eval_table(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = list(dict.fromkeys(k for m in report.modes for k in m.metrics))
    table = Table(
        title=f"n={report.n} questions ({report.n_with_gold} with gold sources), "
        f"top_k={report.top_k}, collection {report.collection}"
    )
    table.add_column("mode", style="bold")
    for k in keys:
        table.add_column(k, justify="right")
    for m in report.modes:
        cells = ["-" if k not in m.metrics else f"{m.metrics[k]:.3f}" for k in keys]
        table.add_row(m.mode, *cells)
    Console().print(table)


@main.command("eval")
@click.option(
    "--qa",
    "qa_path",
    required=True,
    type=click.Path(path_type=str),
    help="Question set (.jsonl: question, gold_sources, answer, answer_keywords).",
)
@click.option(
    "--corpus",
    required=True,
    type=click.Path(path_type=str),
    help="Folder the gold_sources are relative to; ingested into its own collection.",
)
@click.option(
    "--modes",
    default="dense,bm25,hybrid",
    show_default=True,
    help="Comma-separated retrieval modes to compare.",
)
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--generate", is_flag=True, help="Also answer with the LLM (top_k from settings) and score."
)
@click.option("--json", "as_json", is_flag=True, help='Print {"n", "modes": {...}} as JSON.')
@click.option("--plot", type=click.Path(path_type=str), help="Write a grouped bar chart PNG.")
@click.option(
    "--per-question",
    type=click.Path(path_type=str),
    help="Write one JSON line per question per mode (ranked sources, metrics).",
)
@pass_ctx
@handle_errors
def eval_cmd(
    c: Ctx,
    qa_path: str,
    corpus: str,
    modes: str,
    top_k: int,
    generate: bool,
    as_json: bool,
    plot: str | None,
    per_question: str | None,
) -> None:
    """Measure retrieval (and optionally answers) on a question set, per retrieval mode.

    Ingests CORPUS into a collection of its own (eval_<folder>_<hash>, or --collection),
    incrementally, with BM25 enabled so every mode can run.
    """
    from rag_app.errors import UsageError
    from rag_app.evaluate import (
        EvalReport,
        check_gold_sources,
        collection_name_for,
        evaluate_mode,
        load_qa,
        plot_report,
        write_per_question,
    )
    from rag_app.readers import check_root
    from rag_app.retrieval import QUERY_MODES

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    bad = [m for m in mode_list if m not in QUERY_MODES]
    if bad or not mode_list:
        raise UsageError(f"--modes: unknown mode(s) {bad}; choose from {', '.join(QUERY_MODES)}")
    if plot:  # fail before minutes of ingesting, not after
        from rag_app.errors import require

        require("matplotlib", "plot", "matplotlib")
    items = load_qa(qa_path)
    check_root(corpus)
    check_gold_sources(items, corpus)
    collection = c.overrides.get("milvus.collection") or collection_name_for(corpus)
    app = c.app(**{"milvus.collection": collection, "milvus.enable_bm25": True})
    show = sys.stderr.isatty() and not c.quiet
    report_in = app.ingest(corpus, progress=BarProgress() if show else None)
    if not c.quiet:
        click.echo(f"{collection}: {report_in.summary()}", err=True)
    if top_k < 10 and not c.quiet:
        click.echo(f"note: mrr@10 and ndcg@10 are computed over the top {top_k} only", err=True)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rag_app.engine import SourceChunk

    total = len(items) * len(mode_list) * (2 if generate else 1)
    results = []
    with Progress(
        TextColumn("[bold]eval {task.fields[mode]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("questions"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
    ) as bar:
        task = bar.add_task("eval", total=total, mode="")
        for mode in mode_list:
            bar.update(task, mode=mode)
            retriever = app.retriever(top_k=top_k, mode=mode)

            def retrieve(q: str, r: Any = retriever) -> list[Any]:
                return [SourceChunk.from_node(h) for h in r.retrieve(q)]

            def answer(qs: list[str], m: str = mode) -> list[Any]:
                return list(app.query_batch(qs, mode=m))

            results.append(
                evaluate_mode(
                    items,
                    retrieve,
                    mode,
                    top_k,
                    answer=answer if generate else None,
                    advance=lambda n: bar.advance(task, n),
                )
            )
    report = EvalReport(
        n=len(items),
        n_with_gold=sum(1 for it in items if it.gold_sources),
        top_k=top_k,
        collection=collection,
        modes=results,
    )
    if per_question:
        write_per_question(per_question, report)
    if plot:
        plot_report(report, plot, title=f"{os.path.basename(qa_path)}: n={report.n}, top_k={top_k}")
    if as_json:
        emit_json(report.to_dict())
    else:
        _eval_table(report)


if __name__ == "__main__":  # vLLM spawns workers that re-import the entry module
    main()
