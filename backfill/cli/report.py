"""``backfill report ID [--html FILE] [--json]``: the evidence of one backfill (spec §9).

The report is built once as plain data (``backfill.report``) and printed as Markdown, written as
one HTML file, or printed as JSON (docs/report-json.md). A ledger whose chain does not verify
still gets its report, which names the first bad event, and the command then exits 5.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("backfill_id", metavar="ID")
@click.option(
    "--html",
    "html_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report as one self-contained HTML file (instead of printing it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as stable JSON (docs/report-json.md).")
def report(backfill_id: str, html_file: Path | None, as_json: bool) -> None:
    """Evidence for backfill ID: plan, approvals, gates, decisions, runs and a timeline.

    Prints Markdown unless --json or --html is given; exits 5 when the ledger chain does not verify.
    """
    from backfill.cli.output import echo_json
    from backfill.errors import BackfillError, LedgerInvalid
    from backfill.report.text import render_text
    from backfill.services.status import backfill_report

    data = backfill_report(backfill_id)
    if html_file is not None:
        from backfill.report.html import render_html

        try:
            html_file.write_text(render_html(data), encoding="utf-8")
        except OSError as exc:
            raise BackfillError(f"cannot write {html_file}: {exc.strerror or exc}") from None
        # Data goes to stdout, news about files to stderr, so --json output stays parseable.
        click.echo(f"report of {data['backfill']['id']} written to {html_file}", err=True)
    if as_json:
        echo_json(data)
    elif html_file is None:
        click.echo(render_text(data), nl=False)
    if not data["ledger"]["ok"]:
        raise LedgerInvalid(data["ledger"]["message"])
