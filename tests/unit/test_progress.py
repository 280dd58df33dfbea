"""Progress bars (:mod:`chains.common.progress`) and ``parkrelay relayer clear`` (:mod:`relay.ops.backlog`).

Bars are drawn for a person at a terminal only: never when standard output is not a terminal, never with JSON output.
``relayer clear`` is driven against the operator API's real routes (:func:`relay.ops.api.server.build_app`) over a
backend that only holds a relayer's backlog, so the clearing is watched through the real event stream.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from rich.console import Console

from chains.common import progress
from relay.ops import backlog
from relay.ops.api import server as api_server
from relay.ops.cli import main
from relay.ops.config import load_config
from relay.ops.keys import create_secret
from relay.ops.layout import admin_token_path

NAME = "relayer-x"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def quiet_reset() -> Iterator[None]:
    yield
    progress.set_quiet(False)


def test_no_bar_when_stdout_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stdout.isatty()
    assert not progress.shown()
    with progress.bar("plotting", total=10) as bar:
        assert not bar.shown
        bar.update(completed=5, description="half")  # no-ops
        bar.advance()
    assert capsys.readouterr().out == ""


def test_no_bar_with_json_output_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch, quiet_reset: None) -> None:
    monkeypatch.setattr(sys, "stdout", _Tty())
    assert progress.shown()
    assert not progress.shown(json_mode=True)
    with progress.bar("bench", total=3, json_mode=True) as bar:
        assert not bar.shown
    progress.set_quiet(True)  # what the CLI does for --json and --log-json
    assert not progress.shown()
    with progress.bar("bench", total=3) as bar:
        assert not bar.shown
    assert sys.stdout.getvalue() == ""


def test_a_bar_on_a_terminal_shows_its_task() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress.bar("farmer-a: filling a k=21 plot", total=100, console=console) as bar:
        assert bar.shown
        bar.update(completed=40)
        console.file.flush()
    text = out.getvalue()
    assert "filling a k=21 plot" in text and "40/100" in text


# -- parkrelay relayer clear -------------------------------------------------------------------------------------


class _Relayer:
    name = NAME

    def __init__(self) -> None:
        self.cleared = 0

    def clear_backlog(self) -> int:
        self.cleared += 1
        return 3


class _Backend:
    """What the clear and stream routes read: the relayer of the process and its backlog after each refresh."""

    def __init__(self, backlogs: list[int]) -> None:
        self.relayer = _Relayer()
        self.backlogs = backlogs

    def _overview(self, n: int) -> dict[str, Any]:
        return {"relayers": [{"relayer": "relayer-y", "backlog": 9}, {"relayer": NAME, "backlog": n}]}

    def overview(self) -> dict[str, Any]:
        return self._overview(self.backlogs[0])

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for n in self.backlogs[1:]:
            q.put_nowait(self._overview(n))
        return q

    def unsubscribe(self, q: Any) -> None:
        pass


def _cfg(tmp_path: Path) -> Any:
    cfg = SimpleNamespace(relayers=(NAME, "relayer-y"), path=tmp_path / "devnet.toml", data_dir=tmp_path)
    create_secret(admin_token_path(cfg))  # type: ignore[arg-type]
    return cfg


async def _serve(backend: _Backend, token: str | None) -> TestServer:
    server = TestServer(api_server.build_app(backend, token))  # type: ignore[arg-type]
    await server.start_server()
    return server


def _token(cfg: Any) -> str:
    return str(admin_token_path(cfg).read_text().strip())


async def test_clear_waits_until_the_relayers_backlog_is_empty(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    backend = _Backend([3, 2, 2, 1, 0, 5])
    server = await _serve(backend, _token(cfg))
    try:
        out = await backlog.clear(cfg, NAME, str(server.make_url("/")), timeout_s=10)
    finally:
        await server.close()
    assert backend.relayer.cleared == 1
    assert out["cleared"] and out["backlog"] == 0 and out["backlog_start"] == 3 and out["in_flight"] == 3
    assert out["relayer"] == NAME


async def test_clear_gives_up_after_its_timeout(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    server = await _serve(_Backend([2, 2]), _token(cfg))
    try:
        out = await backlog.clear(cfg, NAME, str(server.make_url("/")), timeout_s=0.5)
    finally:
        await server.close()
    assert not out["cleared"] and out["backlog"] == 2 and out["backlog_start"] == 2


async def test_clear_refused_with_a_wrong_token_or_another_relayer(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    server = await _serve(_Backend([0]), "cd" * 32)
    try:
        with pytest.raises(backlog.BacklogError, match=r"refused \(401 rpc.unauthorized\)"):
            await backlog.clear(cfg, NAME, str(server.make_url("/")), timeout_s=5)
    finally:
        await server.close()
    server = await _serve(_Backend([0]), _token(cfg))
    try:
        with pytest.raises(backlog.BacklogError, match="serves relayer 'relayer-x', not 'relayer-y'"):
            await backlog.clear(cfg, "relayer-y", str(server.make_url("/")), timeout_s=5)
    finally:
        await server.close()


def test_clear_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet_reset: None) -> None:
    config = tmp_path / "devnet.toml"
    config.write_text(f'[deployment]\ndata_dir = "{tmp_path / "data"}"\n\n[[chains]]\nid = "dpos-park"\n'
                      f'kind = "dpos"\nnodes = ["witness-a"]\nbase_port = 31000\n\n[relayers]\nnames = ["{NAME}"]\n')
    create_secret(admin_token_path(load_config(config)))
    assert main(["relayer", "clear", "--config", str(config), "--name", NAME]) == 2
    assert "needs --api URL" in capsys.readouterr().err
    # nothing listens on port 9 of loopback: the command says so and prints no JSON
    code = main(["relayer", "clear", "--config", str(config), "--name", NAME, "--api", "http://127.0.0.1:9",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "unreachable" in captured.err


def test_json_output_is_one_object_and_no_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, quiet_reset: None) -> None:
    cfg = _cfg(tmp_path)
    monkeypatch.setattr(sys, "stdout", _Tty())  # even on a terminal

    async def run() -> dict[str, Any]:
        server = await _serve(_Backend([2, 1, 0]), _token(cfg))
        try:
            return await backlog.clear(cfg, NAME, str(server.make_url("/")), 5, as_json=True)
        finally:
            await server.close()

    out = asyncio.run(run())
    assert sys.stdout.getvalue() == ""  # the bar was never drawn
    monkeypatch.setattr(backlog, "clear", lambda *a, **k: _done(out))
    args = SimpleNamespace(api="http://x", name=NAME, timeout_s=5.0, json=True)
    assert backlog.main(cfg, args) == 0
    assert json.loads(sys.stdout.getvalue()) == out


async def _done(out: dict[str, Any]) -> dict[str, Any]:
    return out
