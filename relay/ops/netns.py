"""Nodes on hosts of their own: Linux network namespaces on one bridge, and real partitions between them.

A :class:`Lab` turns one machine into a small network. Each *host* (a relay validator, a park node, a relayer:
any key, by convention the process's ``"<chain id>/<node>"`` or ``"relayer/<name>"``) gets a network namespace
of its own with one interface, ``eth0``, at the address the caller gives it, wired by a veth pair to a bridge in
the root namespace. The bridge holds the subnet's first address, so the root namespace (an operator's shell, a
test) reaches every host, and every host reaches the root namespace's listeners on that address.

Partitions are real: :meth:`Lab.partition` cuts the links between groups of hosts, :meth:`Lab.heal` restores
them. A cut is made inside each host's namespace with a permanent neighbour (ARP) entry that maps the other
side's address to a hardware address no interface has: the host's packets to that side leave, the bridge floods
them, and no host takes them in — silent loss, as on a cut cable, so connections time out (no reset, no
"unreachable" error). It needs only the ``ip`` command (no iptables, nft or tc actions). The root namespace is
outside every group: what it observes does not cross a cut.

Every namespace, veth pair and bridge of a lab carries the lab's prefix (``prn`` + 6 hex digits, unique per lab),
so labs of concurrent runs never meet. :meth:`Lab.create` removes whatever it made if it fails half-way; used as a
context manager the lab is removed on exit, whatever happens; a state file under :data:`STATE_DIR` names the
owning process, and the next :meth:`Lab.create` on the machine (or :func:`sweep`) removes labs whose owner died
without removing them (SIGKILL). Removing a lab SIGKILLs what still runs inside its namespaces.

Small API, for the devnet harness, the chaos soak and the CometBFT harness::

    with Lab({"relay/op-a": "10.77.3.2", "relay/op-b": "10.77.3.3"}) as lab:
        spawn(lab.exec_argv("relay/op-a", [...]))   # the process runs inside op-a's namespace
        lab.partition(["relay/op-a"], ["relay/op-b"])
        lab.heal()

:func:`unavailable` says why a machine cannot run labs (not root, no ``ip``, namespaces refused), None if it can.
``python -m relay.ops.netns`` runs a deployment's devnet across namespaces (see ``--help`` and the README).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

PREFIX_RE = re.compile(r"^prn[0-9a-f]{6}$")
"""A lab's prefix: short enough that ``<prefix>v<n>`` fits Linux's 15-character interface names."""
STATE_DIR = Path(os.environ.get("PARKRELAY_NETNS_STATE", "/run/parkrelay-netns"))
"""One ``<prefix>.json`` per lab alive on the machine (owner pid and start time, namespaces), and the lock file
that serialises creating and sweeping labs."""
CUT_MAC = "02:00:00:00:00:00"
"""The hardware address a cut maps the other side's addresses to: locally administered, owned by no interface."""
IFACE = "eth0"
"""Each host's interface inside its namespace."""

Runner = Callable[[Sequence[str], bytes | None], "subprocess.CompletedProcess[bytes]"]


class NetnsError(Exception):
    """A lab could not be made, changed or removed; the message names the command and what it said."""


def run_ip(argv: Sequence[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run one command (``ip ...``), raising :class:`NetnsError` with its stderr if it fails."""
    res = subprocess.run(list(argv), input=stdin, capture_output=True, check=False, timeout=30)
    if res.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed ({res.returncode}): {res.stderr.decode(errors='replace').strip()}")
    return res


def unavailable() -> str | None:
    """Why network-namespace labs cannot run here (not root, no ``ip`` command, the kernel refuses namespaces);
    None when they can."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"prn{secrets.token_hex(3)}"
    try:
        run_ip(["ip", "netns", "add", probe])
    except (NetnsError, OSError) as exc:
        return f"`ip netns add` is refused here: {exc}"
    try:
        run_ip(["ip", "netns", "del", probe])
    except (NetnsError, OSError):
        pass
    return None


def _owner_alive(pid: int, start: str) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2:].split()[19] == start


def _start_time(pid: int) -> str:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()[19]


class Lab:
    """Hosts in network namespaces on one bridge (module docs). ``hosts``: host key -> IPv4 address, all in one
    /24 whose first address (the bridge's) none of them takes. ``runner`` runs each command (tests pass a fake)."""

    def __init__(self, hosts: Mapping[str, str], *, prefix: str | None = None, runner: Runner = run_ip) -> None:
        if not hosts:
            raise NetnsError("a lab needs at least one host")
        self.prefix = prefix or f"prn{secrets.token_hex(3)}"
        if not PREFIX_RE.match(self.prefix):
            raise NetnsError(f"lab prefix {self.prefix!r}: expected 'prn' and 6 hex digits")
        addrs = {}
        for key, value in hosts.items():
            try:
                addrs[key] = ipaddress.IPv4Address(value)
            except ValueError as exc:
                raise NetnsError(f"host {key!r}: expected an IPv4 address, got {value!r}") from exc
        nets = {ipaddress.IPv4Network(f"{a}/24", strict=False) for a in addrs.values()}
        if len(nets) != 1:
            raise NetnsError(f"every host of a lab must be in one /24, got {sorted(map(str, nets))}")
        self.subnet = nets.pop()
        self.bridge_address = str(self.subnet.network_address + 1)
        seen: dict[str, str] = {}
        for key, a in addrs.items():
            if a in (self.subnet.network_address, self.subnet.broadcast_address) or str(a) == self.bridge_address:
                raise NetnsError(f"host {key!r}: {a} is the subnet's network, broadcast or bridge "
                                 f"({self.bridge_address}) address")
            if str(a) in seen:
                raise NetnsError(f"hosts {seen[str(a)]!r} and {key!r} both have address {a}")
            seen[str(a)] = key
        self.hosts: dict[str, str] = {k: str(a) for k, a in addrs.items()}
        self.index = {k: i for i, k in enumerate(self.hosts)}
        self.run = runner
        self.created = False
        self.cut: list[list[str]] = []

    # -- names ------------------------------------------------------------------------------------

    @property
    def bridge(self) -> str:
        return f"{self.prefix}b"

    def namespace(self, host: str) -> str:
        """The network namespace of ``host`` (``<prefix>-<n>``)."""
        return f"{self.prefix}-{self.index[self._known(host)]}"

    def veth(self, host: str) -> str:
        """The root namespace's end of ``host``'s veth pair (on the bridge)."""
        return f"{self.prefix}v{self.index[self._known(host)]}"

    def address(self, host: str) -> str:
        return self.hosts[self._known(host)]

    def _known(self, host: str) -> str:
        if host not in self.hosts:
            raise NetnsError(f"no host {host!r} in lab {self.prefix}; hosts are {sorted(self.hosts)}")
        return host

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace: ``ip netns exec`` enters it and execs ``argv``, so the pid
        the caller gets is the process's own (signals, parent-death signals and pid files work as without)."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    # -- plans (the commands, pure) ----------------------------------------------------------------

    def create_plan(self) -> list[list[str]]:
        """The commands that make the lab: the bridge with the subnet's first address, then per host its
        namespace, loopback up, the veth pair (one end ``eth0`` inside at the host's address) on the bridge."""
        plen = self.subnet.prefixlen
        cmds = [["ip", "link", "add", self.bridge, "type", "bridge"],
                ["ip", "addr", "add", f"{self.bridge_address}/{plen}", "dev", self.bridge],
                ["ip", "link", "set", self.bridge, "up"]]
        for host, addr in self.hosts.items():
            ns, veth = self.namespace(host), self.veth(host)
            cmds += [["ip", "netns", "add", ns],
                     ["ip", "-n", ns, "link", "set", "lo", "up"],
                     ["ip", "link", "add", veth, "type", "veth", "peer", "name", IFACE, "netns", ns],
                     ["ip", "link", "set", veth, "master", self.bridge],
                     ["ip", "link", "set", veth, "up"],
                     ["ip", "-n", ns, "addr", "add", f"{addr}/{plen}", "dev", IFACE],
                     ["ip", "-n", ns, "link", "set", IFACE, "up"]]
        return cmds

    def partition_plan(self, groups: Sequence[Iterable[str]]) -> dict[str, list[str]]:
        """Per namespace, the ``ip -batch`` lines that cut every host of a group from every host of the other
        groups (both directions: each side's own entries). Hosts in no group keep all their links."""
        sets = [[self._known(h) for h in g] for g in groups]
        flat = [h for g in sets for h in g]
        if len(flat) != len(set(flat)):
            raise NetnsError(f"a host is in two groups: {sets}")
        if len([g for g in sets if g]) < 2:
            raise NetnsError(f"a partition needs at least two non-empty groups, got {sets}")
        plan: dict[str, list[str]] = {}
        for i, group in enumerate(sets):
            others = [h for j, g in enumerate(sets) if j != i for h in g]
            for host in group:
                plan[self.namespace(host)] = [f"neigh replace {self.hosts[o]} lladdr {CUT_MAC} dev {IFACE} "
                                              f"nud permanent" for o in others]
        return plan

    def heal_plan(self) -> list[list[str]]:
        """Drop every cut: each namespace's permanent neighbour entries (the only ones a lab makes)."""
        return [["ip", "-n", self.namespace(h), "neigh", "flush", "dev", IFACE, "nud", "permanent"]
                for h in self.hosts]

    def remove_plan(self) -> list[list[str]]:
        """Delete the veth pairs (at once: a namespace's own devices go only when the kernel gets to it), the
        namespaces and the bridge."""
        return [*(["ip", "link", "del", self.veth(h)] for h in self.hosts),
                *(["ip", "netns", "del", self.namespace(h)] for h in self.hosts), ["ip", "link", "del", self.bridge]]

    # -- acting -----------------------------------------------------------------------------------

    def create(self, *, persistent: bool = False) -> Lab:
        """Make the lab (removing first what a previous lab of this prefix left); on any failure, remove what
        was made and raise :class:`NetnsError`. Also sweeps labs whose owner died. ``persistent``: the lab
        outlives this process (a detached devnet's, ``python -m relay.ops.netns up``) and only :meth:`remove`
        removes it, never a sweep."""
        with _locked():
            sweep(self.run, locked=True)
            self._remove_quietly()
            taken = _root_addresses(self.run)
            if self.bridge_address in taken:
                raise NetnsError(f"{self.bridge_address} (lab {self.prefix}'s bridge) is already on an interface of "
                                 f"the root namespace: another lab or network uses {self.subnet}; pick another")
            self._write_state(persistent)
            try:
                for cmd in self.create_plan():
                    self.run(cmd, None)
            except BaseException:
                self._remove_quietly()
                _state_path(self.prefix).unlink(missing_ok=True)
                raise
        self.created = True
        return self

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between hosts of different ``groups``, replacing an earlier partition: one ``ip -batch``
        per namespace drops its earlier cuts and makes its new ones."""
        plan = self.partition_plan(groups)
        for host in self.hosts:
            ns = self.namespace(host)
            lines = [f"neigh flush dev {IFACE} nud permanent", *plan.get(ns, [])]
            self.run(["ip", "-n", ns, "-batch", "-"], ("\n".join(lines) + "\n").encode())
        self.cut = [list(g) for g in groups]

    def set_cuts(self, cuts: Sequence[Sequence[Iterable[str]]]) -> None:
        """Several partitions at once, each a list of groups as :meth:`partition` takes (the chaos soak cuts a
        relay validator off while a park is cut off from the relay): a link is cut if any of them cuts it.
        Replaces whatever was cut before; no cuts is :meth:`heal`. One ``ip -batch`` per namespace."""
        plans = [self.partition_plan(groups) for groups in cuts]
        for host in self.hosts:
            ns = self.namespace(host)
            lines = [f"neigh flush dev {IFACE} nud permanent"]
            for plan in plans:
                lines += [ln for ln in plan.get(ns, []) if ln not in lines]
            self.run(["ip", "-n", ns, "-batch", "-"], ("\n".join(lines) + "\n").encode())
        self.cut = [list(g) for groups in cuts for g in groups]

    def heal(self) -> None:
        """Restore every link a partition cut (each host re-learns the others' hardware addresses by ARP)."""
        for cmd in self.heal_plan():
            self.run(cmd, None)
        self.cut = []

    def pids(self) -> dict[str, list[int]]:
        """Host -> pids of the processes running in its namespace."""
        out: dict[str, list[int]] = {}
        for h in self.hosts:
            try:
                res = self.run(["ip", "netns", "pids", self.namespace(h)], None)
            except (NetnsError, OSError):
                continue
            out[h] = [int(p) for p in res.stdout.split()]
        return out

    def remove(self) -> None:
        """SIGKILL what still runs inside the namespaces, delete them and the bridge. Idempotent."""
        with _locked():
            self._remove_quietly()
            _state_path(self.prefix).unlink(missing_ok=True)
        self.created = False

    def _remove_quietly(self) -> None:
        for pids in self.pids().values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for cmd in self.remove_plan():
            try:
                self.run(cmd, None)
            except (NetnsError, OSError):
                pass  # not there (yet, or any more)

    def _write_state(self, persistent: bool) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        owner = None if persistent else os.getpid()
        _state_path(self.prefix).write_text(json.dumps(
            {"owner": owner, "owner_start": _start_time(os.getpid()), "hosts": self.hosts}))

    def __enter__(self) -> Lab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _state_path(prefix: str) -> Path:
    return STATE_DIR / f"{prefix}.json"


class _locked:
    """The machine-wide lock of lab creation and removal (an flock on :data:`STATE_DIR`/lock)."""

    def __enter__(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _root_addresses(run: Runner) -> set[str]:
    try:
        out = run(["ip", "-4", "-o", "addr", "show"], None).stdout.decode()
    except (NetnsError, OSError):
        return set()
    return {m.group(1) for m in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)}


def sweep(run: Runner = run_ip, *, locked: bool = False) -> list[str]:
    """Remove every lab on the machine whose owning process is gone (killed before it could remove its lab);
    the prefixes removed."""
    if not locked:
        with _locked():
            return sweep(run, locked=True)
    removed = []
    for path in sorted(STATE_DIR.glob("prn*.json")) if STATE_DIR.exists() else []:
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("owner") is None or _owner_alive(int(state["owner"]), str(state["owner_start"])):
            continue  # persistent, or its owner still runs
        Lab(state["hosts"], prefix=path.stem, runner=run)._remove_quietly()
        path.unlink(missing_ok=True)
        removed.append(path.stem)
    return removed


def free_subnet(run: Runner = run_ip, base: str = "10.77") -> str:
    """A ``<base>.N.0/24`` no address of the root namespace is in (random N, so concurrent runs rarely collide;
    :meth:`Lab.create` refuses a subnet taken meanwhile)."""
    taken = {a.rsplit(".", 1)[0] for a in _root_addresses(run)}
    choices = [n for n in range(1, 255) if f"{base}.{n}" not in taken]
    if not choices:
        raise NetnsError(f"every {base}.N.0/24 is taken")
    return f"{base}.{secrets.choice(choices)}.0/24"


def plan_hosts(keys: Sequence[str], subnet: str) -> dict[str, str]:
    """Addresses for ``keys`` in ``subnet`` (a /24), from its third address on (the second is the bridge's)."""
    net = ipaddress.IPv4Network(subnet)
    if net.prefixlen != 24:
        raise NetnsError(f"expected a /24 subnet, got {subnet}")
    if len(keys) > 252:
        raise NetnsError(f"{len(keys)} hosts do not fit in {subnet}")
    return {k: str(net.network_address + 2 + i) for i, k in enumerate(keys)}


def deployment_hosts(cfg: Any) -> list[str]:
    """The host keys of a deployment's processes that can run on a host of their own: each park node
    (``"<chain id>/<node>"``: a DPoS witness, a PoC farmer, the Ethereum park's node, the Fabric park's network), each
    relay validator (``"<relay chain id>/<name>"``) and each relayer
    (``"relayer/<name>"``)."""
    from relay.ops.config import PER_NODE_HOST_KINDS

    keys = [f"{c.id}/{n}" for c in cfg.chains if c.kind in PER_NODE_HOST_KINDS for n in c.nodes]
    if cfg.relay_base_port is not None:
        keys += [f"{cfg.relay_chain_id}/{v}" for v in cfg.relay_validators]
    return keys + [f"relayer/{r}" for r in cfg.relayers]


def hosts_toml(hosts: Mapping[str, str]) -> str:
    """``hosts`` as the ``[deployment] hosts`` line of a config file."""
    return "hosts = { " + ", ".join(f'"{k}" = "{v}"' for k, v in hosts.items()) + " }"


def expand_group(token: str, hosts: Iterable[str]) -> list[str]:
    """One partition group from the command line: comma-separated host keys, each exact (``relay/op-a``) or a
    prefix naming every host under it (``poc-park``: its nodes; ``relayer``: every relayer)."""
    keys = list(hosts)
    out: list[str] = []
    for part in filter(None, token.split(",")):
        found = [part] if part in keys else [k for k in keys if k.startswith(part.rstrip("/") + "/")]
        if not found:
            raise NetnsError(f"{part!r} names no host; hosts are {keys}")
        out += [k for k in found if k not in out]
    return out


def _lab_file(cfg: Any) -> Path:
    return Path(cfg.data_dir) / "netns.json"


def lab_of(cfg: Any) -> Lab:
    """The lab ``python -m relay.ops.netns up`` made for deployment ``cfg`` (its prefix is kept in
    ``<data_dir>/netns.json``)."""
    path = _lab_file(cfg)
    if not path.exists():
        raise NetnsError(f"no lab for this deployment ({path} is missing): run `python -m relay.ops.netns up` first")
    state = json.loads(path.read_text())
    return Lab(state["hosts"], prefix=state["prefix"])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m relay.ops.netns plan|up|partition|heal|down --config FILE``: a deployment's devnet across network
    namespaces (README, "Partitions on separate hosts")."""
    import argparse
    import sys

    from relay.ops import devnet
    from relay.ops.config import PER_NODE_HOST_KINDS, ConfigError, load_config

    ap = argparse.ArgumentParser(prog="python -m relay.ops.netns", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("plan", "print a [deployment] hosts line giving every process an address of its own"),
                       ("up", "make the namespaces and start the devnet in them (detached)"),
                       ("partition", "cut the links between groups of hosts"), ("heal", "restore every link"),
                       ("down", "stop the devnet and remove its namespaces")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True)
        if name == "plan":
            p.add_argument("--subnet", help="a /24 (default: a free 10.77.N.0/24)")
        if name == "partition":
            p.add_argument("groups", nargs="+", help="comma-separated host keys or prefixes, one argument per group "
                                                     "(e.g. relay/op-a,relay/op-b relay/op-c,relay/op-d)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.cmd == "plan":
            hosts = plan_hosts(deployment_hosts(cfg), args.subnet or free_subnet())
            print("# under [deployment]:\n" + hosts_toml(hosts))
            return 0
        if args.cmd == "up":
            if reason := unavailable():
                raise NetnsError(f"network namespaces unavailable: {reason}")
            other = [c.id for c in cfg.chains if c.kind not in PER_NODE_HOST_KINDS]
            missing = [k for k in deployment_hosts(cfg) if k not in cfg.node_hosts]
            if other or missing:
                raise NetnsError(f"every process needs a host of its own: chains {other} cannot run in a namespace "
                                 f"(only {list(PER_NODE_HOST_KINDS)} parks); no [deployment] hosts entry for {missing} "
                                 f"(`python -m relay.ops.netns plan` prints one)")
            lab = Lab(cfg.node_hosts)
            lab.create(persistent=True)
            _lab_file(cfg).parent.mkdir(parents=True, exist_ok=True)
            _lab_file(cfg).write_text(json.dumps({"prefix": lab.prefix, "hosts": lab.hosts}))
            code = devnet.up(cfg, wrap=lab.exec_argv)
            if code != 0:
                lab.remove()
                _lab_file(cfg).unlink(missing_ok=True)
            else:
                print(f"lab {lab.prefix}: {len(lab.hosts)} hosts on {lab.subnet} (bridge {lab.bridge_address})")
            return code
        lab = lab_of(cfg)
        if args.cmd == "partition":
            groups = [expand_group(g, lab.hosts) for g in args.groups]
            lab.partition(*groups)
            print("cut: " + " | ".join(",".join(g) for g in groups))
        elif args.cmd == "heal":
            lab.heal()
            print("healed")
        else:
            devnet.down(cfg)
            lab.remove()
            _lab_file(cfg).unlink(missing_ok=True)
        return 0
    except (NetnsError, ConfigError, OSError) as exc:
        print(f"netns: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
