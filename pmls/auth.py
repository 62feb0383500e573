"""Who may call the API: operator-issued tokens (kept only as SHA-256 hashes) and JWTs from an identity provider.

A token carries a name and scopes: ``read`` (jobs, trials, models), ``train`` (start and cancel jobs), ``deploy``
(move a lineage's alias), ``admin`` (all of them). ``pmls token create`` makes one and prints the line to add to
``PMLS_API_TOKENS``; ``pmls up`` writes a local admin token to ``PMLS_HOME/api-token`` (mode 0600) on first start,
which the CLI, the demo, the tests and the benchmarks use. A JWT is verified against the provider's JWKS (a URL or
a file), its issuer and audience; its scopes come from a configurable claim.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pmls.settings import Settings

SCOPES = ("read", "train", "deploy", "admin")
TOKEN_PREFIX = "pmls_"
LOCAL_TOKEN_FILE = "api-token"
LOCAL_TOKEN_NAME = "local-admin"


@dataclass(frozen=True)
class Principal:
    """The caller, as the API knows it: a token's name or a JWT's subject, and what it may do."""

    name: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scopes: frozenset[str]
    digest: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str, where: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.replace("+", ",").split(",") if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"{where}: unknown or no scopes {unknown or ''}; choose from {', '.join(SCOPES)}")
    return scopes


def token_entry(name: str, scopes: frozenset[str], token: str) -> str:
    """The ``PMLS_API_TOKENS`` entry for a token: ``name:scope+scope:sha256``."""
    return f"{name}:{'+'.join(sorted(scopes))}:{token_digest(token)}"


def parse_entries(text: str | None) -> list[TokenEntry]:
    """``PMLS_API_TOKENS``: entries ``name:scope+scope:sha256-hex``, separated by commas or new lines."""
    entries = []
    for raw in (text or "").replace("\n", ",").split(","):
        raw = raw.strip()
        if not raw:
            continue
        parts = raw.split(":")
        if len(parts) != 3 or len(parts[2]) != 64 or not parts[0]:
            raise ValueError(
                f"PMLS_API_TOKENS: {raw[:20]!r}... is not name:scope+scope:sha256 (`pmls token create` prints one)"
            )
        name, scopes, digest = parts
        entries.append(
            TokenEntry(name, parse_scopes(scopes, f"PMLS_API_TOKENS entry {name!r}"), digest.lower())
        )
    return entries


def local_token_path(home: Path) -> Path:
    return home / LOCAL_TOKEN_FILE


def read_local_token(home: Path) -> str | None:
    path = local_token_path(home)
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def ensure_local_token(home: Path) -> tuple[str, bool]:
    """The local admin token, created (mode 0600, never readable by others) when missing: (token, created)."""
    existing = read_local_token(home)
    if existing:
        return existing, False
    token = new_token()
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(local_token_path(home), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token, True


def client_token(home: Path) -> str | None:
    """What a client of this machine's API sends: ``PMLS_API_TOKEN``, else the local admin token."""
    return os.environ.get("PMLS_API_TOKEN") or read_local_token(home)


class Authenticator:
    """Checks bearer credentials; built once per API process from the settings."""

    def __init__(self, tokens: list[TokenEntry], jwt: JwtVerifier | None = None) -> None:
        self.tokens = tokens
        self.jwt = jwt

    def authenticate(self, credential: str) -> Principal | None:
        if credential.startswith(TOKEN_PREFIX):
            digest = token_digest(credential)
            for entry in self.tokens:
                if hmac.compare_digest(digest, entry.digest):
                    return Principal(entry.name, entry.scopes)
            return None
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt.verify(credential)
        return None


class JwtVerifier:
    """JWTs signed by the organisation's identity provider: the key from its JWKS (a URL, fetched and cached by
    PyJWT, or a file), the issuer and audience checked, ``exp`` and the subject required."""

    def __init__(
        self, jwks: str, *, issuer: str | None, audience: str | None, scope_claim: str, algorithms: list[str]
    ) -> None:
        import jwt

        self.issuer, self.audience, self.scope_claim, self.algorithms = (
            issuer,
            audience,
            scope_claim,
            algorithms,
        )
        if jwks.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(jwks, cache_keys=True)
            self._keys = None
        else:
            self._client = None
            self._keys = jwt.PyJWKSet.from_json(Path(jwks).read_text())

    def _key(self, token: str) -> Any:
        import jwt

        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        keys = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not keys:
            raise jwt.InvalidTokenError("no key in the JWKS for this token")
        return keys[0].key

    def verify(self, token: str) -> Principal | None:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except (jwt.PyJWTError, OSError, ValueError):
            return None
        raw = claims.get(self.scope_claim, "")
        granted = (
            raw.split() if isinstance(raw, str) else [str(s) for s in raw] if isinstance(raw, list) else []
        )
        return Principal(str(claims["sub"]), frozenset(s for s in granted if s in SCOPES))


def authenticator_from(settings: Settings) -> Authenticator | None:
    """The API's authenticator (None when ``PMLS_AUTH=disabled``): the operator's tokens, the local admin token
    when ``PMLS_HOME/api-token`` exists, and the JWT verifier when a JWKS is configured."""
    auth = settings.auth
    if auth.auth == "disabled":
        return None
    tokens = parse_entries(auth.api_tokens)
    local = read_local_token(settings.home)
    if local:
        tokens.append(TokenEntry(LOCAL_TOKEN_NAME, frozenset({"admin"}), token_digest(local)))
    jwt = None
    if auth.jwt_jwks:
        jwt = JwtVerifier(
            auth.jwt_jwks,
            issuer=auth.jwt_issuer,
            audience=auth.jwt_audience,
            scope_claim=auth.jwt_scope_claim,
            algorithms=[a.strip() for a in auth.jwt_algorithms.split(",") if a.strip()],
        )
    return Authenticator(tokens, jwt)


def api_headers(settings: Settings) -> dict[str, str]:
    """Headers a client on this machine sends to the API (the CLI, the demo, tests, benchmarks)."""
    token = client_token(settings.home)
    return {"Authorization": f"Bearer {token}"} if token else {}
