"""`govlake share client …`: the OAuth clients of consumers (profile format version 2), which
exchange their id and secret at the sharing server's token endpoint for access tokens that
live minutes. Issuing and revoking are journaled; a broken rule prints in red and exits 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from govlake.platform import audit
from govlake.sharing import oauth
from govlake.sharing.access import SharingError
from govlake_app.cli.console import (
    By,
    OnlyConsumer,
    console,
    fail,
    load_settings,
    now,
    user,
    work,
)
from govlake_app.cli.serve import write_oauth_profile

client_app = typer.Typer(
    help="OAuth clients of consumers (client credentials; the secret is shown once).",
    no_args_is_help=True,
)


@client_app.command("add")
def client_add(
    consumer: Annotated[str, typer.Option(help="the consumer department's code")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="write the client's profile file (version 2) here instead of printing its secret"
        ),
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="server endpoint to name")] = None,
    by: By = None,
) -> None:
    """Issue a consumer an OAuth client: its id and secret shown once, or a profile file."""
    at, who = now(), by or user()
    settings = load_settings()
    if out is not None:
        try:
            client_id = write_oauth_profile(settings, consumer, out, by=who, at=at,
                                            endpoint=endpoint)  # fmt: skip
        except SharingError as exc:
            raise fail(str(exc)) from exc
        console.print(f"issued OAuth client {client_id} to {consumer}; wrote {out}",
                      highlight=False)  # fmt: skip
        return
    with work(SharingError) as (_settings, _catalog, s):
        client, secret = oauth.issue_client(s, consumer, by=who, at=at)
        audit.record(s, at=at, actor="platform", action="oauth.client_issue", consumer=consumer,
                     detail={"client_id": client.client_id, "by": who})  # fmt: skip
    token_endpoint = oauth.token_endpoint(endpoint or settings.sharing_endpoint)
    console.print(f"issued OAuth client to {consumer} (shown once, store the secret now):\n"
                  f"  clientId:      {client.client_id}\n  clientSecret:  {secret}\n"
                  f"  tokenEndpoint: {token_endpoint}", highlight=False)  # fmt: skip


@client_app.command("revoke")
def client_revoke(
    client_id: Annotated[str, typer.Argument(help="the client's id")],
    by: By = None,
) -> None:
    """Revoke an OAuth client: no more tokens, and its live access tokens stop working."""
    at, who = now(), by or user()
    with work(SharingError) as (_settings, _catalog, s):
        client, ended = oauth.revoke_client(s, client_id, by=who, at=at)
        audit.record(s, at=at, actor="platform", action="oauth.client_revoke",
                     consumer=client.consumer,
                     detail={"client_id": client_id, "by": who, "tokens_ended": ended})  # fmt: skip
    console.print(f"revoked OAuth client {client_id} of {client.consumer}; "
                  f"{ended} live access token(s) ended", highlight=False)  # fmt: skip


@client_app.command("list")
def client_list(consumer: OnlyConsumer = None) -> None:
    """OAuth clients: whose, issued and last used when, revoked or not (never a secret)."""
    with work(SharingError) as (_settings, _catalog, s):
        table = RichTable("client id", "consumer", "issued", "by", "last token", "revoked")
        for client in oauth.clients(s, consumer=consumer):
            table.add_row(
                client.client_id,
                client.consumer,
                f"{client.issued_at:%Y-%m-%d %H:%M}",
                client.issued_by,
                f"{client.last_used_at:%Y-%m-%d %H:%M}" if client.last_used_at else "",
                f"[red]{client.revoked_at:%Y-%m-%d %H:%M} by {client.revoked_by}[/red]"
                if client.revoked_at
                else "",
            )
    console.print(table)
