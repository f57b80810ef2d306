"""The emulator's token issuer: RS256 access tokens like Azure AD's, and the keys to check them.

The emulator's HTTPS server publishes an OpenID configuration and a JWKS under ``/emulator-tenant``
(no bearer token needed, as for Azure AD's), so ``backfill.tokens`` verifies an emulator token the
way it verifies a real one: discovery, key by ``kid``, signature, issuer, audience, expiry.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from typing import Any

TENANT = "emulator-tenant"
ARM_AUDIENCE = "https://management.azure.com"


class TokenIssuer:
    def __init__(self) -> None:
        self._private: Any = None
        self._lock = threading.Lock()
        self.kid = secrets.token_hex(8)
        self.tenant_id = str(uuid.uuid4())
        self.base = ""  # the server's https://127.0.0.1:PORT, set once it listens

    @property
    def _key(self) -> Any:
        # Made on first use: most emulators never issue a token, and an RSA key takes a while.
        with self._lock:
            if self._private is None:
                from cryptography.hazmat.primitives.asymmetric import rsa

                self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._private

    @property
    def issuer(self) -> str:
        return f"{self.base}/{TENANT}/v2.0"

    @property
    def jwks_path(self) -> str:
        return f"/{TENANT}/discovery/v2.0/keys"

    @property
    def configuration_path(self) -> str:
        return f"/{TENANT}/v2.0/.well-known/openid-configuration"

    def answer(self, path: str) -> dict[str, Any] | None:
        """The JSON document served at ``path``, or None when it is not one of the issuer's."""
        if path == self.configuration_path:
            return {
                "issuer": self.issuer,
                "jwks_uri": self.base + self.jwks_path,
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        if path == self.jwks_path:
            return {"keys": [self.jwk()]}
        return None

    def jwk(self) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        key = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        return {**key, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def issue(
        self,
        upn: str,
        *,
        audience: str = ARM_AUDIENCE,
        expires_in: float = 3600,
        issuer: str | None = None,
        signed_by: Any = None,
        **claims: Any,
    ) -> str:
        """An RS256 access token for ``upn``; ``signed_by`` (another private key) forges one."""
        import jwt

        now = int(time.time())
        body = {
            "aud": audience,
            "iss": issuer or self.issuer,
            "iat": now,
            "nbf": now,
            "exp": int(now + expires_in),
            "tid": self.tenant_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, upn)),
            "upn": upn,
            **claims,
        }
        return jwt.encode(body, signed_by or self._key, algorithm="RS256", headers={"kid": self.kid})

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is one this issuer signed for ARM and still valid: the emulator takes
        it as a bearer token too, so a whole backfill can run under verified principals."""
        import jwt

        with self._lock:
            key = self._private
        if key is None:
            return False
        try:
            jwt.decode(token, key.public_key(), algorithms=["RS256"], audience=ARM_AUDIENCE, issuer=self.issuer)
        except jwt.PyJWTError:
            return False
        return True

    def env(self) -> dict[str, str]:
        """The settings that make ``backfill.tokens`` trust this issuer (and only it)."""
        return {"BACKFILL_TOKEN_ISSUER": self.issuer}
