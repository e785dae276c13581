"""flask-hello: the example app of the course notes, served by gunicorn."""

from flask import Flask

VERSION = 1

app = Flask(__name__)


@app.get("/")
def hello():
    return f"Flask Hello world! Version {VERSION}\n"


@app.get("/healthz")
def healthz():
    return {"status": "ok", "version": VERSION}
