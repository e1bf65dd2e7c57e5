"""_modules/gdl_lb.py against a fake haproxy runtime socket (stdlib only)."""

from __future__ import annotations

import importlib.util
import socketserver
import threading
from pathlib import Path

import pytest
from salt.exceptions import CommandExecutionError

MODULE_PATH = Path(__file__).resolve().parents[2] / "_modules" / "gdl_lb.py"

# The header haproxy 2.6 prints for 'show stat'.
STAT_HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttl"
    "e,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_"
    "1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_to"
    "t,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_ris"
    "e,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_"
    "rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache"
    "_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_"
    "conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,a"
    "gg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_"
    "rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors"
    ",h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,"
    "h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connection"
    "s,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spli"
    "ced_bytes_in,h1_spliced_bytes_out,"
)


def load_module():
    spec = importlib.util.spec_from_file_location("gdl_lb_under_test", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeHaproxy(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers the runtime API commands gdl_lb uses, one command per connection."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.fields = STAT_HEADER[2:].rstrip(",").split(",")
        self.backend = "be_blog_dev"
        self.state = {
            "app-0-blog-dev": {"status": "UP", "scur": 0, "addr": "10.20.0.11:80"},
            "app-1-blog-dev": {"status": "UP", "scur": 3, "addr": "10.20.0.12:80"},
        }
        self.commands: list[str] = []
        super().__init__(path, FakeHandler)

    def row(self, svname: str, values: dict[str, object]) -> str:
        cells = {"pxname": self.backend, "svname": svname, "weight": "1", "check_status": "L7OK"}
        cells.update({key: str(value) for key, value in values.items()})
        return ",".join(cells.get(field, "") for field in self.fields) + ","

    def answer(self, command: str) -> str:
        self.commands.append(command)
        if command == "show stat":
            rows = [STAT_HEADER]
            rows.append(self.row("FRONTEND", {"pxname": "fe_blog_dev", "status": "OPEN"}))
            rows += [self.row(name, values) for name, values in self.state.items()]
            rows.append(self.row("BACKEND", {"status": "UP"}))
            return "\n".join(rows) + "\n\n"
        words = command.split()
        if words[:2] == ["set", "server"] and len(words) == 5 and words[3] == "state":
            backend, _, server = words[2].partition("/")
            if backend != self.backend or server not in self.state:
                return "No such server.\n\n"
            if words[4] not in ("ready", "drain", "maint"):
                return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"
            self.state[server]["status"] = {"ready": "UP", "drain": "DRAIN", "maint": "MAINT"}[
                words[4]
            ]
            return "\n"
        return "Unknown command.\n\n"


class FakeHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        command = self.rfile.readline().decode().strip()
        self.wfile.write(self.server.answer(command).encode())


@pytest.fixture
def haproxy(tmp_path):
    path = str(tmp_path / "admin.sock")
    server = FakeHaproxy(path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def gdl_lb(haproxy):
    module = load_module()
    sock = haproxy.server_address
    module.__salt__ = {"config.get": lambda key, default="": sock}
    return module


def test_virtual_name():
    assert load_module().__virtual__() == "gdl_lb"


def test_servers_lists_backend_servers_only(gdl_lb):
    found = gdl_lb.servers()
    assert [(row["backend"], row["name"], row["status"]) for row in found] == [
        ("be_blog_dev", "app-0-blog-dev", "UP"),
        ("be_blog_dev", "app-1-blog-dev", "UP"),
    ]
    assert found[1]["sessions"] == 3
    assert found[0]["address"] == "10.20.0.11:80"
    assert gdl_lb.servers(backend="be_other") == []


def test_servers_carry_sessions_and_request_rate(gdl_lb, haproxy):
    haproxy.state["app-0-blog-dev"].update({"scur": 2, "rate": 14})
    haproxy.state["app-1-blog-dev"].update({"scur": 0, "rate": 0})
    found = {row["name"]: row for row in gdl_lb.servers()}
    assert (found["app-0-blog-dev"]["sessions"], found["app-0-blog-dev"]["request_rate"]) == (2, 14)
    assert (found["app-1-blog-dev"]["sessions"], found["app-1-blog-dev"]["request_rate"]) == (0, 0)


def test_request_rate_is_the_server_rows_rate_and_a_frontends_req_rate():
    """haproxy leaves req_rate empty on server rows: their rate is what they were given."""
    module = load_module()
    fields = STAT_HEADER[2:].rstrip(",").split(",")

    def line(**cells: str) -> str:
        return ",".join(cells.get(field, "") for field in fields) + ","

    text = "\n".join(
        [
            STAT_HEADER,
            line(pxname="fe_blog_dev", svname="FRONTEND", rate="9", req_rate="31"),
            line(pxname="be_blog_dev", svname="app-0-blog-dev", scur="4", rate="17"),
            line(pxname="be_blog_dev", svname="app-1-blog-dev", scur="1", rate="14"),
            line(pxname="be_blog_dev", svname="app-2-blog-dev", status="MAINT"),
            line(pxname="be_blog_dev", svname="BACKEND", scur="5", rate="31"),
            line(pxname="stats", svname="FRONTEND", req_rate="1"),
        ]
    )
    rows = {row["name"]: row for row in module.parse_stat(text)}
    assert list(rows) == ["app-0-blog-dev", "app-1-blog-dev", "app-2-blog-dev"]
    assert [(r["sessions"], r["request_rate"]) for r in rows.values()] == [(4, 17), (1, 14), (0, 0)]
    # A row with req_rate set (haproxy may fill it in a later version) takes it.
    both = module.parse_stat(
        "\n".join([STAT_HEADER, line(pxname="b", svname="s", rate="3", req_rate="5")])
    )
    assert both[0]["request_rate"] == 5


def test_drain_and_ready_send_the_runtime_commands(gdl_lb, haproxy):
    assert gdl_lb.drain("app-1-blog-dev") is True
    assert "set server be_blog_dev/app-1-blog-dev state drain" in haproxy.commands
    assert {row["name"]: row["status"] for row in gdl_lb.servers()}["app-1-blog-dev"] == "DRAIN"
    assert gdl_lb.ready("app-1-blog-dev") is True
    assert {row["name"]: row["status"] for row in gdl_lb.servers()}["app-1-blog-dev"] == "UP"


def test_unknown_server_names_the_known_ones(gdl_lb):
    with pytest.raises(CommandExecutionError, match="use one of app-0-blog-dev, app-1-blog-dev"):
        gdl_lb.drain("app-7-blog-dev")


def test_refusal_from_haproxy_is_an_error(gdl_lb, haproxy):
    original = haproxy.answer

    def stale(command):
        if command.startswith("set server"):
            return "No such server.\n\n"
        return original(command)

    haproxy.answer = stale
    with pytest.raises(CommandExecutionError, match="No such server"):
        gdl_lb.drain("app-0-blog-dev")


def test_wait_drained(gdl_lb, haproxy):
    assert gdl_lb.wait_drained("app-0-blog-dev", timeout=1) is True
    assert gdl_lb.wait_drained("app-1-blog-dev", timeout=0.3, interval=0.05) is False

    def sessions_end():
        haproxy.state["app-1-blog-dev"]["scur"] = 0

    timer = threading.Timer(0.2, sessions_end)
    timer.start()
    try:
        assert gdl_lb.wait_drained("app-1-blog-dev", timeout=5, interval=0.05) is True
    finally:
        timer.cancel()


def test_missing_socket_says_what_to_do(tmp_path):
    module = load_module()
    with pytest.raises(CommandExecutionError, match=r"apply gdl\.lb"):
        module.servers(socket=str(tmp_path / "absent.sock"))


def test_garbage_answer_is_an_error(gdl_lb):
    with pytest.raises(CommandExecutionError, match="unexpected answer"):
        gdl_lb.parse_stat("Unknown command.\n")


@pytest.mark.parametrize(
    ("vip", "addresses", "expected"),
    [
        ("10.20.0.10", ["127.0.0.1", "10.20.0.2", "10.20.0.10"], True),
        ("10.20.0.10/32", ["10.20.0.10"], True),
        ("10.20.0.10", ["10.20.0.2", "10.20.0.100"], False),
        ("fd00::10", ["fd00:0::10"], True),
    ],
)
def test_address_in(vip, addresses, expected):
    assert load_module().address_in(vip, addresses) is expected


def test_holds_vip_looks_at_this_hosts_addresses(monkeypatch):
    module = load_module()
    monkeypatch.setattr(module, "local_addresses", lambda: ["127.0.0.1", "10.20.0.10"])
    assert module.holds_vip("10.20.0.10") is True
    assert module.holds_vip("10.20.0.11") is False
    with pytest.raises(CommandExecutionError, match="not an IP address"):
        module.holds_vip("lb-0")


def test_local_addresses_include_loopback():
    assert "127.0.0.1" in load_module().local_addresses()


def test_running_names_the_daemons_with_a_process(tmp_path):
    gdl_lb = load_module()
    for pid, comm in (("1", "init"), ("42", "haproxy"), ("43", "haproxy")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "99").mkdir()  # a process that ended while /proc was read
    assert gdl_lb.running(proc=str(tmp_path)) == {"haproxy": True, "keepalived": False}
    assert gdl_lb.running("init,keepalived", proc=str(tmp_path)) == {
        "init": True,
        "keepalived": False,
    }
