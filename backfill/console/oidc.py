"""OpenID Connect sign-in: authorization code with PKCE (S256), through authlib (issue 15).

The ID token is verified by authlib against the issuer's published keys (JWKS from its discovery
document), with its issuer, audience (our client ID), expiry and the nonce of this sign-in; only
then does its ``oid`` and ``preferred_username`` become who is acting, source ``oidc``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from backfill.console.auth import SignInRefused, oidc_actor
from backfill.console.settings import ConsoleSettings
from backfill.identity import Actor


def oidc_client(settings: ConsoleSettings) -> Any:
    """The registered authlib client for the configured issuer (discovery is fetched lazily)."""
    from authlib.integrations.starlette_client import OAuth

    assert settings.oidc is not None
    oauth = OAuth()
    kwargs: dict[str, Any] = {"scope": settings.oidc.scope, "code_challenge_method": "S256"}
    if settings.oidc.client_secret is None:
        # A public client (PKCE alone): the token request carries no secret.
        kwargs["token_endpoint_auth_method"] = "none"
    oauth.register(
        name="console",
        client_id=settings.oidc.client_id,
        client_secret=settings.oidc.client_secret,
        server_metadata_url=settings.oidc.metadata_url,
        client_kwargs=kwargs,
    )
    return oauth.console


async def finish_sign_in(client: Any, request: Request) -> Actor:
    """Exchange the callback's code (with the PKCE verifier kept in the session) and read the
    verified ID token's identity; SignInRefused when anything is missing or does not verify."""
    from authlib.integrations.base_client import OAuthError
    from authlib.jose.errors import JoseError

    try:
        metadata = await client.load_server_metadata()
        token = await client.authorize_access_token(
            request, claims_options={"iss": {"essential": True, "value": metadata.get("issuer")}}
        )
    except (OAuthError, JoseError) as exc:
        raise SignInRefused(f"sign-in refused by the identity provider: {exc}") from None
    claims = token.get("userinfo")
    if not claims:
        raise SignInRefused("sign-in refused: the identity provider returned no ID token")
    return oidc_actor(claims)
