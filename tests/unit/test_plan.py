from gdl.plan import desired_names, make_plan
from gdl.providers.base import ERROR, RUNNING, STOPPED, Server


def server(name: str, state: str = RUNNING, app: str = "blog", env: str = "dev") -> Server:
    role = name.split("-", 1)[0]
    return Server(
        name=name,
        app=app,
        env=env,
        role=role,
        state=state,
        address=None,
        size="m1.small",
        provider_id=name,
    )


def test_desired_names_has_the_pair_and_the_apps():
    assert desired_names("blog", "dev", 2) == [
        "lb-0-blog-dev",
        "lb-1-blog-dev",
        "app-0-blog-dev",
        "app-1-blog-dev",
    ]


def test_empty_environment_creates_everything():
    plan = make_plan("blog", "dev", 2, [])
    assert plan.create == ("app-0-blog-dev", "app-1-blog-dev", "lb-0-blog-dev", "lb-1-blog-dev")
    assert plan.changes
    assert plan.of_role("app").create == ("app-0-blog-dev", "app-1-blog-dev")


def test_same_request_changes_nothing():
    existing = [server(n) for n in desired_names("blog", "dev", 2)]
    plan = make_plan("blog", "dev", 2, existing)
    assert not plan.changes
    assert plan.describe() == ["blog-dev: no changes"]


def test_scale_down_removes_the_highest_numbers():
    existing = [server(n) for n in desired_names("blog", "dev", 12)]
    plan = make_plan("blog", "dev", 1, existing)
    assert plan.remove[0] == "app-1-blog-dev"
    assert plan.remove[-1] == "app-11-blog-dev"  # numeric order, not text order
    assert "app-0-blog-dev" in plan.keep


def test_broken_servers_are_replaced():
    existing = [
        server("lb-0-blog-dev", ERROR),
        server("lb-1-blog-dev"),
        server("app-0-blog-dev", STOPPED),
    ]
    plan = make_plan("blog", "dev", 1, existing)
    assert plan.replace == ("app-0-blog-dev", "lb-0-blog-dev")
    assert plan.keep == ("lb-1-blog-dev",)


def test_other_environments_are_never_in_the_plan():
    existing = [server("app-0-blog-qa", env="qa"), server("app-5-blog-dev")]
    plan = make_plan("blog", "dev", 1, existing)
    assert "app-0-blog-qa" not in plan.remove + plan.keep
    assert plan.remove == ("app-5-blog-dev",)


def test_a_server_whose_minion_never_joined_is_replaced():
    existing = [server(n) for n in desired_names("blog", "dev", 2)]
    plan = make_plan("blog", "dev", 2, existing, never_joined=["app-1-blog-dev", "app-9-blog-dev"])
    assert plan.replace == ("app-1-blog-dev",)
    assert "replace app-1-blog-dev (broken)" in plan.describe()
    assert "app-1-blog-dev" not in plan.keep
