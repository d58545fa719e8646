"""Secrets scoped (issue 19, item 9): the openai backend's key comes from a file only its
owner can read (`api_key_file`, the cluster way) or an environment variable (`api_key_env`,
local runs); it reaches the server and nothing else: not the rate stage's settings or
params, not its execution part, not a log line, not an error message, not the environment
of a stage whose backends do not name it. A local fake server, no network."""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate
from synthllm import cli
from synthllm.core.llm import (
    BackendError,
    BackendSpec,
    Request,
    Sampling,
    open_backend,
    scrub_environment,
)
from synthllm.settings import stage_settings
from synthllm.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-0123456789-DO-NOT-LEAK"


@pytest.fixture
def environ():
    saved = dict(os.environ)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "openai.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


class Server:
    """An OpenAI-compatible chat endpoint that records the Authorization headers; with
    `status` it refuses every request with a message quoting the key, as a careless
    server might."""

    def __init__(self, status: int = 200):
        seen = self.authorizations = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                seen.append(self.headers.get("Authorization"))
                if status == 200:
                    message = {"role": "assistant", "content": "Rating: 7"}
                    body = {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "gpt-4o",
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    }
                else:
                    body = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def rater(url: str, **keys) -> BackendSpec:
    return BackendSpec.from_config(
        "models.rater",
        {"backend": "openai", "model": "gpt-4o", "base_url": url, "max_retries": 0, **keys},
    )


def rate_once(spec: BackendSpec) -> list:
    backend = open_backend(spec)
    request = Request([{"role": "user", "content": "Rate this."}])
    return backend.generate([request], Sampling(0.0, 1.0, 8, 0), [0])


def paper_config(**rater_keys) -> dict:
    config = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    config["models"]["rater"].update(rater_keys)
    validate(config, str(ROOT / "config" / "schema.yaml"), set_default=True)
    return config


def rate_parts(config: dict) -> tuple[dict, dict]:
    """The rate stage's (settings, execution), named as rules/02_filter.smk names them."""
    return stage_settings(
        config,
        model="models.rater",
        sampling="filter.finegrained.sampling",
        structured="generation.structured",
        reference_sample="filter.finegrained.reference_sample",
        random_sample="filter.finegrained.random_sample",
        max_doc_chars="filter.finegrained.max_doc_chars",
        seed="filter.seed",
        chunk_size="generation.chunk_size",
    )


def test_the_paper_rater_reads_a_key_file_and_the_rate_settings_hold_no_key(environ, key_file):
    paper = paper_config()
    assert paper["models"]["rater"]["api_key_file"].startswith("~/")
    assert (
        "api_key_env"
        not in yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["models"]["rater"]
    )
    environ["OPENAI_API_KEY"] = KEY  # even when a key is exported as well
    settings, execution = rate_parts(paper_config(api_key_file=str(key_file)))
    # the file's path and the variable's name are execution (no rerun trigger), not params
    assert "api_key_file" not in settings["model"] and "api_key_env" not in settings["model"]
    assert execution["model"]["api_key_file"] == str(key_file)
    assert KEY not in json.dumps(settings) and KEY not in json.dumps(execution)


def test_the_key_from_its_file_reaches_the_server_and_no_log_line(key_file, caplog, capsys):
    server = Server()
    try:
        with caplog.at_level(logging.DEBUG):  # every logger: openai's, httpx's, ours
            completions = rate_once(rater(server.url, api_key_file=str(key_file)))
    finally:
        server.close()
    assert completions[0].text == "Rating: 7"
    assert server.authorizations == [f"Bearer {KEY}"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "key from file" in logged and str(key_file) in logged
    assert KEY not in logged
    out = capsys.readouterr()
    assert KEY not in out.out + out.err


def test_a_key_quoted_by_the_server_is_masked_in_the_error(key_file):
    server = Server(status=401)
    try:
        with pytest.raises(BackendError) as caught:
            rate_once(rater(server.url, api_key_file=str(key_file)))
    finally:
        server.close()
    assert "models.rater: the server" in str(caught.value) and "401" in str(caught.value)
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert caught.value.__cause__ is None  # no chained exception carries it either


def test_the_key_object_does_not_show_the_key(key_file):
    backend = open_backend(rater("http://127.0.0.1:9/v1", api_key_file=str(key_file)))
    assert KEY not in repr(backend) and KEY not in repr(backend.spec)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda p: p.chmod(0o644),
            "has mode 0644, readable by others; make it yours alone: chmod 600",
        ),
        (lambda p: p.chmod(0o640), "has mode 0640"),
        (lambda p: p.unlink(), "cannot read the key file"),
        (lambda p: p.write_text("\n"), "is empty"),
    ],
)
def test_a_key_file_others_can_read_or_that_is_missing_is_an_error_naming_it(
    key_file, setup, message
):
    setup(key_file)
    with pytest.raises(BackendError, match="models.rater.api_key_file: ") as caught:
        open_backend(rater("http://127.0.0.1:9/v1", api_key_file=str(key_file)))
    assert message in str(caught.value)


def test_a_read_only_key_file_is_fine_and_the_file_wins_over_the_variable(environ, key_file):
    key_file.chmod(0o400)
    environ["SYNTHLLM_TEST_OTHER_KEY"] = "sk-other"
    backend = open_backend(
        rater(
            "http://127.0.0.1:9/v1",
            api_key_file=str(key_file),
            api_key_env="SYNTHLLM_TEST_OTHER_KEY",
        )
    )
    assert backend._key == KEY


def test_the_variable_serves_local_runs(environ):
    environ["SYNTHLLM_TEST_KEY"] = KEY
    server = Server()
    try:
        rate_once(rater(server.url, api_key_env="SYNTHLLM_TEST_KEY"))
    finally:
        server.close()
    assert server.authorizations == [f"Bearer {KEY}"]


def test_api_keys_leave_the_environment_of_stages_whose_backends_do_not_name_them(environ):
    environ.update({"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY})
    assert scrub_environment({"model": {"api_key_env": "OPENAI_API_KEY"}}) == ["ANTHROPIC_API_KEY"]
    assert environ["OPENAI_API_KEY"] == KEY
    assert scrub_environment({"chunk_size": 4, "threads": 2}) == ["OPENAI_API_KEY"]
    assert "OPENAI_API_KEY" not in environ


def test_the_dispatcher_scrubs_before_the_stage_and_its_workers_start(environ, monkeypatch):
    """What a vLLM worker, torchrun or any other child of a stage inherits."""
    environ["OPENAI_API_KEY"] = KEY
    seen = {}
    monkeypatch.setattr(cli, "_target", lambda command: lambda **parts: seen.update(os.environ))
    args = type("Args", (), {})()
    args.inputs = args.outputs = args.settings = "{}"
    args.execution = json.dumps({"threads": 2})
    cli._run_stage(next(c for c in STAGES if c.name == "extract"), args)
    assert seen and "OPENAI_API_KEY" not in seen
