"""Who may call what: bearer tokens per role, checked by the ingress middleware before a route runs.

Roles, each including the ones below it: `admin` ⊇ `write` ⊇ `read`.
- read: `POST /recommend`, `/rank`, `/search`, `/ads`, `GET /items/{id}`, `/forecast/{id}`,
  `/campaigns/{id}` (and any route not listed here);
- write: `POST /events`, `POST /items` (they change what every later answer sees);
- open: `/healthz`, `/readyz` (the kubelet's probes carry no token), `/docs`, `/openapi.json`.

Tokens come from environment variables (`serve.auth.token_env`: role → variable name), which the
chart fills from a Kubernetes Secret (values name the Secret, never a token). A variable may hold
several comma-separated tokens, so one can be rotated without downtime. Comparison is constant
time (`hmac.compare_digest` against every token of every role, always all of them), and a token is
never logged or echoed. Without a token: 401 with `WWW-Authenticate: Bearer`; with a token that
does not grant the route's role: 403; both in the JSON error shape of every other error.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

ROLES = ("read", "write", "admin")  # each includes the ones before it
OPEN = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"})
WRITE = frozenset({("POST", "/events"), ("POST", "/items")})


def required_role(method: str, path: str) -> str | None:
    """The role a request needs (None: open)."""
    path = path.rstrip("/") or "/"
    if path in OPEN:
        return None
    if (method.upper(), path) in WRITE:
        return "write"
    return "read"


@dataclass(frozen=True)
class Authenticator:
    tokens: dict[str, tuple[bytes, ...]]  # role → its tokens

    @classmethod
    def from_env(cls, token_env: dict[str, str], environ=None) -> Authenticator:
        """Tokens from the variables `token_env` names; ValueError naming the variable when a role
        has none (auth on with no token would lock everyone out, or worse, let anyone in)."""
        environ = os.environ if environ is None else environ
        tokens = {}
        for role in ROLES:
            name = token_env.get(role)
            values = tuple(t.strip().encode() for t in (environ.get(name, "") if name else "").split(",") if t.strip())
            if not values:
                raise ValueError(f"serve.auth is on but the environment variable {name!r} (serve.auth.token_env.{role}) holds "
                                 "no token; set it (the chart fills it from the Secret named by serve.auth.secretName), or turn "
                                 "auth off with serve.auth.enabled: false")
            if any(len(t) < 16 for t in values):
                raise ValueError(f"a token in {name!r} (serve.auth.token_env.{role}) is shorter than 16 characters; use a random "
                                 "one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            tokens[role] = values
        return cls(tokens)

    def role_of(self, token: bytes) -> str | None:
        """The highest role a token grants; every comparison runs, so timing says nothing."""
        found = None
        for role in ROLES:
            for known in self.tokens[role]:
                if hmac.compare_digest(token, known):
                    found = role
        return found

    def check(self, method: str, path: str, authorization: bytes | None) -> tuple[int, str] | None:
        """None when the request may go on, else (status, message) for the error answer."""
        needed = required_role(method, path)
        if needed is None:
            return None
        scheme, _, token = (authorization or b"").partition(b" ")
        if not authorization or scheme.lower() != b"bearer" or not token.strip():
            return 401, f"{method} {path} needs a {needed} token: send the header 'Authorization: Bearer <token>'"
        role = self.role_of(token.strip())
        if role is None:
            return 401, "the token is not valid (it matches no configured token)"
        if ROLES.index(role) < ROLES.index(needed):
            return 403, f"a {role} token may not call {method} {path}; it needs a {needed} token"
        return None
