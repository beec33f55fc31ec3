"""The Python SDK: ``@flow`` runs as plain Python, derives a parameter schema from the
signature, and ``.deploy()`` creates or updates deployments on a real server process."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher import flow
from dispatcher.cli.deploy import parse_deployments
from dispatcher.cli.output import DEPLOY_SUCCESS, CliError
from dispatcher.flows import (
    RUN_LOGGER_NAME,
    Flow,
    FlowError,
    ParameterError,
    parameter_schema,
    validate_parameters,
)
from dispatcher.models import ScheduleSpec
from dispatcher.sources import GitSource
from tests.fakes.pushpool_server import ServerProcess, free_port
from tests.test_runtime import git, git_repo

API_TOKEN = "sdk-tests-api-token"
PROJECT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- @flow


def test_decorated_function_runs_here_as_plain_python() -> None:
    @flow
    def add_numbers(a: int, b: int = 2) -> int:
        """Adds."""
        return a + b

    assert isinstance(add_numbers, Flow)
    assert add_numbers(1) == 3 and add_numbers(a=2, b=5) == 7
    assert add_numbers.name == "add-numbers"
    assert add_numbers.description == "Adds."
    assert getattr(add_numbers, "__name__", None) == "add_numbers"  # looks like the function
    assert (add_numbers.retries, add_numbers.timeout_seconds) == (0, None)


def test_flow_options_are_kept_and_checked() -> None:
    @flow(name="custom", description="Says it.", log_prints=True, retries=2,
          retry_delay_seconds=1.5, timeout_seconds=30)
    def anything() -> None:
        """Not this."""

    assert (anything.name, anything.description, anything.log_prints, anything.retries,
            anything.retry_delay_seconds, anything.timeout_seconds) == (
        "custom", "Says it.", True, 2, 1.5, 30)
    for options, says in (({"name": "bad name!"}, "flow name 'bad name!' is not valid"),
                          ({"retries": -1}, "retries must be 0 or more"),
                          ({"timeout_seconds": 0}, "timeout_seconds must be positive")):
        with pytest.raises(FlowError, match=says):
            flow(**options)(lambda: None)
    with pytest.raises(FlowError, match="positional-only or \\*args"):
        flow(lambda a, /: a)


def test_log_prints_sends_print_to_the_run_logger_too(caplog: pytest.LogCaptureFixture,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    @flow(log_prints=True)
    def chatty(who: str) -> None:
        print("hello", who)
        print("to a file", file=sys.__stderr__)  # not stdout/stderr as captured: not logged

    @flow
    def quiet() -> None:
        print("not logged")

    caplog.set_level(logging.INFO, logger=RUN_LOGGER_NAME)
    chatty("world")
    quiet()
    print("outside any flow")
    assert capsys.readouterr().out == "hello world\nnot logged\noutside any flow\n"
    assert [r.getMessage() for r in caplog.records if r.name == RUN_LOGGER_NAME] == [
        "hello world"]


def test_async_flow_runs_as_a_coroutine(caplog: pytest.LogCaptureFixture) -> None:
    @flow(log_prints=True)
    async def doubled(x: int) -> int:
        await asyncio.sleep(0)
        print("doubling", x)
        return 2 * x

    caplog.set_level(logging.INFO, logger=RUN_LOGGER_NAME)
    assert doubled.is_async
    assert asyncio.run(doubled(21)) == 42
    assert [r.getMessage() for r in caplog.records] == ["doubling 21"]


# ---------------------------------------------------------------------------- parameters


class Point:  # not something JSON Schema can describe
    pass


def test_parameter_schema_follows_the_signature() -> None:
    def fn(name: str, count: int = 3, tags: list[str] | None = None, where: Point | None = None,
           *, json: dict[str, float] | None = None) -> None:
        pass

    schema = parameter_schema(fn)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["name"]
    props = schema["properties"]
    assert props["name"]["type"] == "string"
    assert props["count"] == {"default": 3, "title": "Count", "type": "integer"}
    assert props["tags"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}
    assert "anyOf" not in props["where"]  # described as anything
    assert props["json"]["anyOf"][0]["additionalProperties"] == {"type": "number"}

    def with_kwargs(a: int, **rest: Any) -> None:
        pass

    assert parameter_schema(with_kwargs)["additionalProperties"] is True


def test_validate_parameters_coerces_and_names_the_bad_one() -> None:
    def fn(n: int, ratio: float = 0.5, label: str = "x") -> None:
        pass

    assert validate_parameters(fn, {"n": "7"}) == {"n": 7}  # defaults stay the function's
    assert validate_parameters(fn, {"n": 1, "ratio": 2}) == {"n": 1, "ratio": 2.0}
    for parameters, field in (({"n": "seven"}, "parameters.n"), ({}, "parameters.n"),
                              ({"n": 1, "extra": True}, "parameters.extra"),
                              ({"n": 1, "ratio": "half"}, "parameters.ratio")):
        with pytest.raises(ParameterError) as caught:
            validate_parameters(fn, parameters)
        assert caught.value.field == field


# ---------------------------------------------------------------------------- from_source


@flow
def hello(name: str = "world") -> str:
    return f"Hello, {name}!"


def test_from_source_checks_the_entrypoint(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text("def hello(name='x'):\n    return name\n")
    deployable = hello.from_source(tmp_path, "flows.py:hello")
    assert (deployable.source, deployable.entrypoint) == (str(tmp_path.resolve()),
                                                         "flows.py:hello")
    assert deployable("you") == "Hello, you!" and hello.source is None
    git = hello.from_source("https://github.com/acme/flows.git#branch=dev", "a.py:hello")
    assert git.source == "https://github.com/acme/flows.git#branch=dev"
    pinned = hello.from_source(GitSource("https://h/r.git", commit="abc1234"), "a.py:hello")
    assert pinned.source == "https://h/r.git#commit=abc1234"
    for source, entrypoint, says in (
            (tmp_path, "flows.py", "must look like 'path/to/file.py:function'"),
            (tmp_path, "other.py:hello", "other.py does not exist"),
            (tmp_path, "flows.py:goodbye", "defines no function 'goodbye'"),
            (tmp_path / "missing", "flows.py:hello", "is not a directory"),
            ("https://h/r.git#brnch=x", "a.py:hello", "unknown source setting 'brnch'")):
        with pytest.raises(FlowError, match=says):
            hello.from_source(source, entrypoint)


# ---------------------------------------------------------------------------- deploy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("sdk-server"),
                         env={"PUSHPOOL_API_TOKEN": API_TOKEN})
    proc.start()
    try:
        for pool in ("local", "other"):
            httpx.post(f"{proc.url}/api/work-pools", json={"name": pool, "type": "process"},
                       headers={"Authorization": f"Bearer {API_TOKEN}"}).raise_for_status()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> httpx.Client:
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "120")
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_TOKEN}"})


def load_module(path: Path, text: str) -> Any:
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FLOW_FILE = '''
from dispatcher import flow


@flow(name="greeter", description="Greets someone.")
def greet(name: str, times: int = 1) -> str:
    return " ".join([f"Hello, {name}!"] * times)
'''


@pytest.mark.slow
def test_deploy_prints_the_confirmation_and_a_second_deploy_updates(
        api: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load_module(tmp_path / "greetings.py", FLOW_FILE)
    deployment = module.greet.deploy(name="daily", work_pool_name="local", cron="0 9 * * *",
                                     timezone="Europe/Paris", parameters={"name": "team"},
                                     job_variables={"env": {"A": "1"}}, tags=["demo"],
                                     version="1.0")
    out = capsys.readouterr().out
    assert out.startswith(DEPLOY_SUCCESS + "\n")
    assert "Deployments" in out
    row = next(line for line in out.splitlines() if "greeter/daily" in line)
    assert "applied" in row and "created in work pool 'local'" in row
    assert out.rstrip().endswith("To execute flow runs from these deployments, run:\n"
                                 "        $ pushpool deployment run 'greeter/daily'")
    # Deployed from the file that defines the flow: its directory and file:function.
    assert deployment.source == str(tmp_path.resolve())
    assert deployment.entrypoint == "greetings.py:greet"
    assert deployment.description == "Greets someone."
    assert [(s.cron, s.timezone) for s in deployment.schedules] == [("0 9 * * *",
                                                                     "Europe/Paris")]
    assert deployment.parameter_schema == module.greet.parameter_schema()
    assert (deployment.parameters, deployment.tags, deployment.version) == (
        {"name": "team"}, ["demo"], "1.0")

    again = module.greet.deploy(name="daily", work_pool_name="other", interval=timedelta(hours=1))
    assert "updated in work pool 'other'" in capsys.readouterr().out
    assert again.id == deployment.id
    listed = api.get("/api/deployments", params={"flow": "greeter"}).json()
    assert [d["name"] for d in listed] == ["daily"]
    assert [s["interval"] for s in listed[0]["schedules"]] == [3600.0]


@pytest.mark.slow
def test_a_run_whose_parameters_do_not_fit_is_refused_at_creation(
        api: httpx.Client, tmp_path: Path) -> None:
    module = load_module(tmp_path / "greetings.py", FLOW_FILE)
    module.greet.deploy(name="checked", work_pool_name="local", print_next_steps=False,
                        schedules=[ScheduleSpec(rrule="FREQ=DAILY"), {"cron": "0 1 * * *"}])
    for parameters, field in (({"name": "x", "times": "many"}, "parameters.times"),
                              ({"times": 2}, "parameters.name"),
                              ({"name": "x", "volume": 11}, "parameters")):
        response = api.post("/api/deployments/greeter/checked/runs",
                            json={"parameters": parameters})
        assert response.status_code == 422, response.text
        assert response.json()["details"][0]["field"] == field
    ok = api.post("/api/deployments/greeter/checked/runs",
                  json={"parameters": {"name": "x", "times": 2},
                        "scheduled_time": "2030-01-01T00:00:00Z"})
    assert ok.status_code == 201, ok.text


@pytest.mark.slow
def test_deploy_errors_name_the_argument(api: httpx.Client, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_module(tmp_path / "greetings.py", FLOW_FILE)
    with pytest.raises(FlowError, match="pool_name: work pool 'nope' does not exist"):
        module.greet.deploy(name="x", work_pool_name="nope")
    with pytest.raises(FlowError, match="give one of cron, interval, rrule or schedules"):
        module.greet.deploy(name="x", work_pool_name="local", cron="* * * * *", interval=60)
    with pytest.raises(FlowError, match=r"parameters\.times: Input should be a valid integer"):
        module.greet.deploy(name="x", work_pool_name="local", parameters={"times": "lots"})
    with pytest.raises(FlowError, match="invalid deployment name"):
        module.greet.deploy(name="bad name", work_pool_name="local")
    with pytest.raises(FlowError, match="defined inside a function"):
        flow(lambda: None).deploy(name="x", work_pool_name="local")
    monkeypatch.setenv("PUSHPOOL_API_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(FlowError, match="cannot reach the pushpool API"):
        module.greet.deploy(name="x", work_pool_name="local")



# ---------------------------------------------------------------------------- schedule arguments

# deploy() arguments, and the pushpool.yaml schedule entry that says the same; None where
# `pushpool deploy` leaves the check to the API (cron syntax, zone names).
BAD_SCHEDULES = [
    ({"interval": 0}, "interval: 0"),
    ({"interval": timedelta(0)}, "interval: 0"),
    ({"interval": -5}, "interval: -5"),
    ({"timezone": "Europe/Paris"}, "timezone: Europe/Paris"),
    ({"cron": "0 1 * * *", "timezone": "Mars/Olympus"}, None),
    ({"cron": "every day"}, None),
]


def _yaml_refusal(schedule_yaml: str) -> str:
    text = ("deployments:\n  - name: nightly\n    entrypoint: greetings.py:greet\n"
            "    work_pool: {name: local}\n    schedules:\n      - " + schedule_yaml + "\n")
    with pytest.raises(CliError) as caught:
        parse_deployments(text)
    return caught.value.message.split(": ", 2)[2]  # after "pushpool.yaml:LINE: deployment 'x'"


@pytest.mark.slow
@pytest.mark.parametrize(("arguments", "schedule_yaml"), BAD_SCHEDULES)
def test_deploy_refuses_bad_schedule_arguments_as_yaml_and_the_api_do(
        api: httpx.Client, tmp_path: Path, arguments: dict[str, Any],
        schedule_yaml: str | None) -> None:
    module = load_module(tmp_path / "greetings.py", FLOW_FILE)
    with pytest.raises(FlowError) as caught:
        module.greet.deploy(name="nightly", work_pool_name="local", print_next_steps=False,
                            **arguments)
    refused = str(caught.value)
    schedule = {k: v.total_seconds() if isinstance(v, timedelta) else v
                for k, v in arguments.items()}
    answer = api.put("/api/deployments", json={
        "name": "nightly", "flow_name": "greeter", "pool_name": "local",
        "entrypoint": "greetings.py:greet", "schedules": [schedule]})
    assert answer.status_code == 422, answer.text
    assert refused == answer.json()["message"]
    if schedule_yaml is not None:
        assert _yaml_refusal(schedule_yaml) == refused
    assert all(d["name"] != "nightly" for d in api.get("/api/deployments").json())


def test_timezone_with_a_schedules_list_is_refused() -> None:
    with pytest.raises(FlowError, match="give each schedule its own timezone"):
        hello.deploy(name="x", work_pool_name="local", timezone="UTC",
                     schedules=[{"cron": "0 1 * * *"}])


# ---------------------------------------------------------------------------- flow.from_source


def test_module_level_from_source_loads_the_flow_from_git(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo", {
        "repo_info.py": (PROJECT / "examples" / "repo_info.py").read_text(),
        "plain.py": "def add(a: int, b: int = 2) -> int:\n    return a + b\n",
        "broken.py": "raise RuntimeError('needs a database')\n"})
    path_before = list(sys.path)
    deployable = flow.from_source(source=f"file://{repo}",
                                  entrypoint="repo_info.py:get_repo_info")
    assert sys.path == path_before
    assert "repo_info" not in sys.modules  # the deploying program's own names are left alone
    assert isinstance(deployable, Flow)
    assert (deployable.name, deployable.log_prints) == ("get-repo-info", True)
    assert (deployable.source, deployable.entrypoint) == (f"file://{repo}",
                                                         "repo_info.py:get_repo_info")
    assert deployable.parameter_schema()["properties"]["repo_name"] == {
        "default": "PrefectHQ/prefect", "title": "Repo Name", "type": "string"}
    plain = flow.from_source(str(repo), "plain.py:add")  # a directory; a plain function
    assert plain.name == "add" and plain.source == str(repo.resolve())
    assert plain.parameter_schema()["required"] == ["a"]
    for source, entrypoint, says in (
            (f"file://{repo}", "missing.py:add", "missing.py does not exist"),
            (f"file://{repo}", "plain.py:subtract", "defines no function 'subtract'"),
            (f"file://{repo}", "broken.py:main", "defines no function 'main'"),
            (f"file://{tmp_path / 'nowhere'}", "plain.py:add", "source: could not fetch"),
            ("https://h/r.git#brnch=x", "a.py:f", "unknown source setting 'brnch'")):
        with pytest.raises(FlowError, match=says):
            flow.from_source(source, entrypoint)
    (repo / "fails.py").write_text("import no_such_module\ndef run():\n    pass\n")
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "more", cwd=repo)
    with pytest.raises(FlowError, match=r"importing fails\.py:run from the source failed: "
                                        r"ModuleNotFoundError"):
        flow.from_source(f"file://{repo}", "fails.py:run")
    assert sys.path == path_before


@pytest.mark.slow
def test_module_level_from_source_deploys(api: httpx.Client, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo", {
        "repo_info.py": (PROJECT / "examples" / "repo_info.py").read_text()})
    deployment = flow.from_source(
        source=f"file://{repo}", entrypoint="repo_info.py:get_repo_info",
    ).deploy(name="prefect-idiom", work_pool_name="local", cron="0 1 * * *",
             print_next_steps=False)
    stored = api.get("/api/deployments/get-repo-info/prefect-idiom").json()
    assert stored["id"] == deployment.id
    assert stored["source"] == f"file://{repo}"
    assert stored["entrypoint"] == "repo_info.py:get_repo_info"
    assert stored["parameter_schema"]["properties"]["repo_name"]["type"] == "string"
