"""flask-pip: a Flask app with its own pinned dependencies, settings from the environment and secrets from files.

Plain settings come from environment variables. Secrets come from files under /run/secrets/<NAME>, where
dockyard mounts them read-only; a secret the app also accepts from an environment variable says so below.
`flask --app app db-upgrade` is the release command: it migrates the SQLite database under DATA_DIR.
"""

import os
import sqlite3
import sys
from contextlib import closing
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import click
from flask import Flask

VERSION = 1
SECRETS_DIR = Path("/run/secrets")
# Plain settings: environment variables.
SETTINGS = ("GREETING", "ADMIN_EMAIL", "DATA_DIR", "FAIL_MIGRATION")
# Secrets: name -> whether an environment variable of that name may stand in for the file.
SECRETS = {"SECRET_KEY": False, "API_TOKEN": False, "DATABASE_PASSWORD": True}
# Each migration brings the schema to the next version.
MIGRATIONS = (
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    "ALTER TABLE notes ADD COLUMN created TEXT",
)


def read_secret(name: str, env_fallback: bool = False) -> tuple[str, str] | None:
    """(value, where it came from), or None when the secret is not given."""
    path = SECRETS_DIR / name
    if path.is_file():
        try:
            # files written by other tools often end with a line break that is not part of the secret
            return path.read_text().rstrip("\n"), "file"
        except PermissionError:
            raise RuntimeError(f"{path} is not readable by user id {os.getuid()}; give the file to this user") from None
    if env_fallback and name in os.environ:
        return os.environ[name], "env"
    return None


def data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR", "/srv/data"))


def schema() -> tuple[int, int]:
    """The schema version and how many times the release command has run, (0, 0) before the first run."""
    database = data_dir() / "app.db"
    if not database.is_file():
        return 0, 0
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return db.execute("SELECT MAX(version), COUNT(*) FROM releases").fetchone()


app = Flask(__name__)
secret_key = read_secret("SECRET_KEY")
if secret_key:
    app.config["SECRET_KEY"] = secret_key[0]


@app.get("/")
def index():
    version, runs = schema()
    rows = [f"<tr><td>{name}</td><td>{escape(os.environ.get(name, '(not set)'))}</td></tr>" for name in SETTINGS]
    for name, env_fallback in SECRETS.items():
        found = read_secret(name, env_fallback)
        rows.append(f"<tr><td>{name}</td><td>{f'secret, from {found[1]}' if found else 'secret, missing'}</td></tr>")
    greeting = escape(os.environ.get("GREETING", "Hello"))
    return (
        f"<!doctype html><title>flask-pip</title><h1>{greeting} from flask-pip! Version {VERSION}</h1>"
        f"<p>schema version {version}, release command runs: {runs}</p>"
        f"<table><tr><th>setting</th><th>value</th></tr>{''.join(rows)}</table>\n"
    )


@app.get("/healthz")
def healthz():
    return {"status": "ok", "version": VERSION}


@app.cli.command("db-upgrade")
def db_upgrade():
    """Bring the database to the newest schema; FAIL_MIGRATION=1 makes it fail, to rehearse a bad release."""
    if os.environ.get("FAIL_MIGRATION") == "1":
        click.echo("db-upgrade: failed on purpose (FAIL_MIGRATION=1); nothing was changed", err=True)
        sys.exit(1)
    data_dir().mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(data_dir() / "app.db")) as db, db:  # commits, then closes
        db.execute("CREATE TABLE IF NOT EXISTS releases (version INTEGER NOT NULL, app_version INTEGER, at TEXT)")
        (current,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM releases").fetchone()
        for statement in MIGRATIONS[current:]:
            db.execute(statement)
        db.execute(
            "INSERT INTO releases VALUES (?, ?, ?)", (len(MIGRATIONS), VERSION, datetime.now(UTC).isoformat())
        )
    click.echo(f"db-upgrade: schema at version {len(MIGRATIONS)} ({len(MIGRATIONS) - current} migration(s) applied)")
