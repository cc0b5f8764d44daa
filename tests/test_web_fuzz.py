"""Every route and parameter of the web app fuzzed: no input gets a 500, and nobody learns which athletes exist.

Hypothesis drives the real app (every middleware, a migrated SQLite database with an athlete, a run and a
prompt) with path segments, query parameters and form or JSON bodies drawn from: any text (control characters,
other scripts, lone surrogates left out only because HTTP cannot carry them), digits of other scripts, numbers
up to 30 digits either sign, overlong strings, and the real values (names, tokens, ids) so that the checks behind
them are reached. The routes are read from the app, so a new route is fuzzed without a word here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from conftest import make_settings
from factories import parsed_run, store_runs
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.routing import Route
from starlette.testclient import TestClient
from webclient import BASE_URL, PEER, log_in

from ingest.strava.oauth import make_connect_token
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, Prompt
from stridecare.links import athlete_key, done_url, unsubscribe_url
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app
from stridecare_app.web.auth import login_url

PARAMS = (
    "t",
    "sig",
    "range",
    "code",
    "state",
    "scope",
    "error",
    "athlete",
    "hub.mode",
    "hub.challenge",
    "hub.verify_token",
)
FORM_FIELDS = ("csrf", "t", "password", "List-Unsubscribe")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Site:
    """The app under test, its clients and the real values of its one athlete."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.app = create_app(rt, enqueue=lambda _id: None)
        [self.run_id] = store_runs(rt.db, rt.settings, "anna", [parsed_run(rt.now() - timedelta(hours=2))], rt.now())
        with rt.db.transaction() as s:
            athlete = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
            prompt = Prompt(athlete_id=athlete.id, kind="shoe", dedupe_key="fuzz", local_day=rt.now().date())
            s.add(prompt)
            s.flush()
            self.athlete_id, self.token, self.prompt_id = athlete.id, athlete.dashboard_token, prompt.id
            self.connect_token = make_connect_token(rt.settings, athlete, rt.now())
        key = athlete_key(rt.link_key, athlete.link_secret)
        self.done_sig = parse_qs(urlsplit(done_url("", key, self.prompt_id)).query)["sig"][0]
        self.unsubscribe_sig = parse_qs(urlsplit(unsubscribe_url("", key, self.athlete_id)).query)["sig"][0]
        self.anonymous = TestClient(
            self.app, client=PEER, base_url=BASE_URL, raise_server_exceptions=False, follow_redirects=False
        )
        self.admin = log_in(
            TestClient(self.app, client=PEER, base_url=BASE_URL, raise_server_exceptions=False, follow_redirects=False),
            rt,
        )

    def real(self, name: str) -> list[str]:
        """The values of parameter ``name`` that reach the checks behind it (a real id, token or signature)."""
        return {
            "athlete_name": ["anna"],
            "run_id": [str(self.run_id)],
            "athlete_id": [str(self.athlete_id)],
            "prompt_id": [self.prompt_id],
            "list_name": ["prompts"],
            "t": [self.token, self.connect_token, login_url(self.rt.settings, self.rt.now()).split("t=", 1)[1]],
            "sig": [self.done_sig, self.unsubscribe_sig],
            "range": ["6w", "all"],
            "hub.mode": ["subscribe"],
            "hub.verify_token": ["fuzz-verify"],
            "state": [self.connect_token],
        }.get(name, ["anna", self.token])

    def values(self, name: str = "") -> st.SearchStrategy[str]:
        """Any value parameter ``name`` might be given: one of its real values or an odd one."""
        return st.sampled_from(self.real(name)) | self.odd(name)

    def odd(self, name: str = "") -> st.SearchStrategy[str]:
        """An odd value for parameter ``name``."""
        real = self.real(name)
        return st.one_of(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
            st.text(alphabet="0123456789\u0661\u0662\u06f3\u096a\uff15", min_size=1, max_size=30),
            st.integers(min_value=-(10**30), max_value=10**30).map(str),
            st.builds(lambda char, n: char * n, st.characters(blacklist_categories=["Cs"]), st.integers(200, 5000)),
            st.sampled_from(real).map(lambda v: v + "\u00e9"),
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    rt = Runtime.open(
        make_settings(
            root,
            strava_client_id="4711",
            strava_client_secret="fuzz-secret",
            strava_base_url="http://127.0.0.1:9",  # nothing listens: no request may reach it anyway
            strava_verify_token="fuzz-verify",
            strava_subscription_id=1,
            metrics_token="fuzz-metrics",
        )
    )
    yield Site(rt)
    rt.close()


def _routes() -> list[tuple[str, str]]:
    """``(method, path template)`` of every route the app serves."""
    # Building the app touches no database: an engine that is never connected will do.
    app = create_app(Runtime(make_settings(Path("/nonexistent")), Database("sqlite://")), enqueue=lambda _id: None)
    found = []
    for route in app.routes:
        assert isinstance(route, Route)
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                found.append((method, route.path))
    return found


ROUTES = _routes()


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: quote(values[m.group(1)], safe=""), template)


def _json_bodies() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.text(max_size=20)
    )
    event = st.fixed_dictionaries(
        {
            "object_type": st.sampled_from(["activity", "athlete", "x"]),
            "object_id": scalars,
            "aspect_type": st.sampled_from(["create", "update", "delete", "é"]),
            "owner_id": scalars,
            "subscription_id": st.one_of(st.just(1), scalars),
            "event_time": scalars,
            "updates": st.one_of(st.dictionaries(st.text(max_size=8), scalars, max_size=3), scalars),
        }
    )
    return st.one_of(event, st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))


def test_every_route_is_in_the_fuzzed_list() -> None:
    paths = {path for _, path in ROUTES}
    assert {"/", "/login", "/logout", "/metrics", "/healthz", "/strava/webhook", "/strava/connect"} <= paths
    assert {"/done/{prompt_id}", "/unsubscribe/{athlete_id}/{list_name}", "/dashboard/{athlete_name}"} <= paths
    assert "/dashboard/{athlete_name}/runs/{run_id}" in paths


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_no_input_gets_a_500(site: Site, method: str, template: str) -> None:
    names = re.findall(r"{(\w+)", template)

    fields = [*names, *PARAMS, *FORM_FIELDS]

    def one_odd(pool: list[str]) -> st.SearchStrategy[dict[str, str]]:
        return st.sampled_from(pool).flatmap(lambda name: st.fixed_dictionaries({name: site.odd(name)}))

    # A real request (every parameter one of its real values) with a few parameters made odd or left out: the
    # odd value then meets the check it is meant to trip, behind the ones the real values pass.
    @FUZZ
    @given(
        real=st.fixed_dictionaries({name: st.sampled_from(site.real(name)) for name in fields}),
        odd=one_odd(names or fields)
        | one_odd(fields)
        | st.dictionaries(st.sampled_from(fields), site.odd(), max_size=3),
        dropped=st.sets(st.sampled_from([*PARAMS, *FORM_FIELDS]), max_size=len(PARAMS)),
        # Only a POST sends a body: drawing one for a GET would cost generation time and test nothing.
        body=_json_bodies() if method == "POST" else st.none(),
        as_admin=st.booleans(),
        as_json=st.booleans() if method == "POST" else st.just(False),
    )
    def check(
        real: dict[str, str],
        odd: dict[str, str],
        dropped: set[str],
        body: Any,
        as_admin: bool,
        as_json: bool,
    ) -> None:
        values = {**real, **odd}
        query = {name: values[name] for name in PARAMS if name not in dropped}
        form = {name: values[name] for name in FORM_FIELDS if name not in dropped}
        client = site.admin if as_admin else site.anonymous
        path = _fill(template, values)
        kwargs: dict[str, Any] = {"params": query}
        if method == "POST":
            if as_json:
                kwargs["content"] = json.dumps(body).encode()
                kwargs["headers"] = {"content-type": "application/json"}
            else:
                kwargs["data"] = form
        try:
            answer = client.request(method, path, **kwargs)
        except httpx.InvalidURL:
            reject()  # a URL past what a client will send (httpx's 64 KB): no server ever sees it
        assert answer.status_code < 500, (method, path, query, answer.status_code, answer.text[:300])

    check()


@FUZZ
@given(data=st.data())
def test_unknown_and_forbidden_athletes_answer_alike(site: Site, data: st.DataObject) -> None:
    # A value that is no path segment ("", "..", one with a slash) makes another path, not another athlete or run.
    segment = site.values().filter(lambda v: v not in ("", ".", "..") and "/" not in v)
    name = data.draw(segment.filter(lambda v: v != "anna"), label="name")
    token = data.draw(site.values().filter(lambda v: v != site.token), label="token")
    run = data.draw(st.one_of(st.just(str(site.run_id)), segment), label="run id")
    for suffix in ("", f"/runs/{quote(run, safe='')}"):
        unknown = site.anonymous.get(f"/dashboard/{quote(name, safe='')}{suffix}", params={"t": token})
        forbidden = site.anonymous.get(f"/dashboard/anna{suffix}", params={"t": token})
        assert (unknown.status_code, unknown.text) == (forbidden.status_code, forbidden.text), (name, token, run)
        assert forbidden.status_code == 403
