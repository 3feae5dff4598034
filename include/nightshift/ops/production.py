"""The production check: settings nightshift refuses to run a shared deployment with.

``nightshift check --production`` runs it (compose's init service does, before anything else
starts). Each problem names the setting at fault and what to do; a pure function of the
Airflow configuration and the environment, so every rule is unit-tested.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nightshift.config.settings import is_loopback, is_url
from nightshift.ops.dask_tls import CA_FILE, REQUIRE_ENCRYPTION, pair_settings

# Passwords that ship in examples and tutorials, and so are the first ones tried.
KNOWN_DEFAULTS = {
    "",
    "admin",
    "airflow",
    "changeme",
    "change-me",
    "minioadmin",
    "minio123",
    "password",
    "postgres",
    "secret",
    "nightshift",
}
MIN_PASSWORD_LENGTH = 12
PASSWORDS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
)
WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}
# Keys that sign sessions and tokens: anyone who knows or guesses one signs in as anyone.
MIN_SECRET_KEY_LENGTH = 32
SECRET_KEYS = (
    ("api", "secret_key", "AIRFLOW__API__SECRET_KEY"),
    ("api_auth", "jwt_secret", "AIRFLOW__API_AUTH__JWT_SECRET"),
)
# Characters that end the password part of the database URL compose builds from it.
URL_BREAKING = "@:/?#[]%"


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _bind_host(address: str) -> str:
    """Return the host part of ``host:port``, ``:port`` or a bare host."""
    address = address.strip()
    if is_url(address):
        address = address.split("://", 1)[1]
    if address.startswith("["):
        return address[: address.index("]") + 1]
    return address.rsplit(":", 1)[0] if ":" in address else address


Settings = Callable[[str, str], str | None]


def production_problems(
    airflow: Settings, env: Mapping[str, str], access: Mapping[str, Mapping[str, str]] | None = None
) -> list[str]:
    """Return what is unsafe about this deployment; an empty list means it may start.

    ``airflow(section, key)`` returns an Airflow setting (None when unset); ``env`` holds the
    deployment's variables (the Dask bind addresses, the service passwords, MLflow's client);
    ``access``: each pipeline's ``access:`` (team roles), by pipeline name.
    """
    rules = (
        _airflow_problems,
        _secret_key_problems,
        _dask_problems,
        _password_problems,
        _mlflow_problems,
    )
    found = [problem for rule in rules for problem in rule(airflow, env)]
    return found + _access_problems(airflow, access or {})


def _secret_key_problems(airflow: Settings, env: Mapping[str, str]) -> list[str]:
    """Airflow's session and token signing keys, and MLflow's, must be long random secrets."""
    keys = [(f"[{s}] {k} ({variable})", airflow(s, k)) for s, k, variable in SECRET_KEYS]
    if "MLFLOW_SECRET_KEY" in env:
        keys.append(("MLFLOW_SECRET_KEY", env["MLFLOW_SECRET_KEY"]))
    problems = []
    for name, value in keys:
        value = (value or "").strip()
        if value.lower() in KNOWN_DEFAULTS or len(value) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"{name} is {'empty' if not value else 'weak'}: it signs sessions and tokens, "
                "so whoever guesses it signs in as anyone. Set at least "
                f"{MIN_SECRET_KEY_LENGTH} random characters "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    return problems


def _access_problems(airflow: Settings, access: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Team roles (``access:``) are enforced by the FAB auth manager only."""
    auth_manager = airflow("core", "auth_manager") or ""
    if auth_manager.endswith("FabAuthManager"):
        return []
    return [
        f"pipeline {name} limits access to {sorted(roles)} (access:), but the auth manager "
        f"({auth_manager.rsplit('.', 1)[-1] or 'the default'}) does not enforce team roles: "
        "every user would see and run it. Use Airflow's FAB auth manager (docker-compose.yaml "
        "does), or remove access:"
        for name, roles in sorted(access.items())
        if roles
    ]


def _airflow_problems(airflow: Settings, env: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    auth_manager = airflow("core", "auth_manager") or ""
    if auth_manager.endswith("SimpleAuthManager") and _truthy(
        airflow("core", "simple_auth_manager_all_admins")
    ):
        problems.append(
            "[core] simple_auth_manager_all_admins is on: every visitor of the UI is an admin. "
            "Turn it off (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False) and list users in "
            "simple_auth_manager_users, or use another auth manager"
        )
    if not (airflow("core", "fernet_key") or "").strip():
        problems.append(
            "[core] fernet_key is empty: connections and variables would be stored unencrypted. "
            "Set AIRFLOW__CORE__FERNET_KEY (see .env.example for how to make one)"
        )
    database = airflow("database", "sql_alchemy_conn") or ""
    if database.startswith("sqlite"):
        problems.append(
            "[database] sql_alchemy_conn is SQLite: it serialises writers, so parallel backfills "
            "(--max-active-runs above 1, the default is 10) fail with 'database is locked'. "
            "Use Postgres (docker-compose.yaml does)"
        )
    return problems


# What a scheduler listening beyond one host needs: Dask's TLS with mutual authentication
# (``nightshift dask-certs`` writes the files; ``ops.dask_tls`` names the settings).
MUTUAL_TLS = (CA_FILE, *pair_settings("scheduler"))


def _mutual_tls_missing(env: Mapping[str, str]) -> list[str]:
    """Return what a scheduler's TLS with mutual authentication lacks (empty: nothing)."""
    missing = [name for name in MUTUAL_TLS if not env.get(name, "").strip()]
    if env.get(REQUIRE_ENCRYPTION, "").lower() not in ("true", "1"):
        missing.append(f"{REQUIRE_ENCRYPTION}=True")
    address = env.get("NIGHTSHIFT_DASK_ADDRESS", "")
    if address and not address.startswith("tls://"):
        missing.append(f"a tls:// NIGHTSHIFT_DASK_ADDRESS (not {address!r})")
    return missing


def _dask_problems(airflow: Settings, env: Mapping[str, str]) -> list[str]:
    missing = _mutual_tls_missing(env)
    problems: list[str] = []
    for variable, what in (
        ("DASK_SCHEDULER_HOST", "the Dask scheduler"),
        ("DASK_DASHBOARD_ADDRESS", "the Dask dashboard"),
        ("NIGHTSHIFT_HOST_ADDRESS", "the Dask scheduler (compose profile multi-host)"),
    ):
        if variable in env and _bind_host(env[variable]) in WILDCARDS and missing:
            problems.append(
                f"{variable}={env[variable]!r}: {what} listens on every interface without TLS "
                f"and mutual authentication (missing: {', '.join(missing)}); bind it to one "
                "host (compose: the service name), or make certificates with `nightshift "
                "dask-certs` and set them (docs/deployment.md)"
            )
    return problems + _object_store_problems(env)


def _object_store_problems(env: Mapping[str, str]) -> list[str]:
    """The object store's S3 port, published for other machines (compose publishes it on
    NIGHTSHIFT_HOST_ADDRESS), must speak TLS: its keys and the whole lake cross the network."""
    published = env.get("NIGHTSHIFT_HOST_ADDRESS", "").strip()
    endpoint = env.get("AWS_ENDPOINT_URL", "").strip()
    if not published or is_loopback(published) or not endpoint.startswith("http://"):
        return []
    return [
        f"AWS_ENDPOINT_URL={endpoint!r}: the object store is published on "
        f"NIGHTSHIFT_HOST_ADDRESS={published!r} for other machines but spoken to without "
        "TLS; serve it over https (compose: MinIO's --certs-dir, docs/deployment.md)"
    ]


def _password_problems(airflow: Settings, env: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    for variable in PASSWORDS:
        if variable not in env:
            continue
        value = env[variable]
        if value.strip().lower() in KNOWN_DEFAULTS:
            problems.append(f"{variable} is a default password ({value!r}); set a secret one")
        elif len(value) < MIN_PASSWORD_LENGTH:
            problems.append(
                f"{variable} is {len(value)} characters; use at least {MIN_PASSWORD_LENGTH}"
            )
        elif variable == "POSTGRES_PASSWORD" and (bad := sorted(set(value) & set(URL_BREAKING))):
            problems.append(
                f"POSTGRES_PASSWORD holds {''.join(bad)!r}, which ends the password part of the "
                "database URL docker-compose.yaml builds from it (postgresql://user:password@"
                "host): Airflow would connect with a wrong password or host. Use letters, "
                "digits, '-', '_' and '.' (make_env.py's passwords do)"
            )
    return problems


def _mlflow_problems(airflow: Settings, env: Mapping[str, str]) -> list[str]:
    """An MLflow server that takes requests without credentials lets anyone who reaches it
    move the champion alias (the production pointer)."""
    uri = env.get("MLFLOW_TRACKING_URI", "")
    signed = env.get("MLFLOW_TRACKING_TOKEN") or (
        env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD")
    )
    if uri.startswith(("http://", "https://")) and not signed:
        return [
            f"MLFLOW_TRACKING_URI={uri!r} is reached without credentials: a server that "
            "accepts that lets anyone who reaches it move the champion alias. Run it with "
            "MLflow's authentication (`mlflow server --app-name basic-auth`, as "
            "docker-compose.yaml does) and set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        ]
    return []
