#!/usr/bin/env python3
"""The per-plugin breakdown of `scripts/bench.sh chain`: reads `strace -f` traces of one runtime
call (cnitool ADD or DEL) and prints, per plugin execution, its wall time, the processes it
spawned, its runs of nft/iptables, its namespace switches and sleeps, and its etcd requests.

    chain-trace.py LABEL VERB ETCD_PORT LIGHT_TRACE... -- NET_TRACE

LIGHT_TRACE: `strace -f -qq --seccomp-bpf -ttt -v -s 4096 -e trace=process,setns,nanosleep,
clock_nanosleep` (little overhead: the wall times are taken from these, median over the files).
NET_TRACE: the same call traced with `-xx -s 65536 -e trace=process,connect,write,writev,sendto,
sendmsg`: every byte a process writes to etcd's client port is HTTP/2, and each HEADERS frame
the client sends opens one gRPC request (a round trip).
"""

import os
import re
import statistics
import sys

PLUGINS = {"vxlan-overlay", "etcd-ipam", "gwbridge-egress", "portmap", "bridge", "host-local",
           "tuning", "bandwidth", "firewall", "loopback"}
FIREWALL_TOOLS = ("nft", "iptables", "ip6tables", "ebtables")
LINE = re.compile(r"^(\d+)\s+([\d.]+)\s+(.*)$")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Trace:
    """The processes of one trace: who started whom, what each ran, when."""

    def __init__(self, path):
        self.proc = {}      # tid -> process (the tid of its first thread)
        self.parent = {}    # process -> parent process
        self.name = {}      # process -> basename of what it ran last
        self.command = {}   # process -> CNI_COMMAND of its exec
        self.start = {}     # process -> exec time
        self.end = {}       # process -> exit time
        self.order = []     # processes in exec order
        self.counts = {}    # (process, what) -> count
        self.syscalls = []  # (process, text) of every line, for the network trace
        pending = {}        # tid -> text of an unfinished call
        for raw in open(path, errors="replace"):
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            tid, t, text = int(m.group(1)), float(m.group(2)), m.group(3)
            if text.endswith("<unfinished ...>"):
                pending[tid] = text[: -len("<unfinished ...>")]
                continue
            if text.startswith("<... "):
                text = pending.pop(tid, "") + text.split(">", 1)[1]
            p = self.proc.setdefault(tid, tid)
            call = text.split("(", 1)[0]
            result = text.rsplit("= ", 1)[-1].split()[0] if "= " in text else ""
            if call in ("clone", "clone3", "fork", "vfork") and result.isdigit():
                child = int(result)
                if "CLONE_THREAD" in text:
                    self.proc[child] = p
                else:
                    self.proc[child] = child
                    self.parent[child] = p
            elif call == "execve" and result == "0":
                # (the network trace writes every string in hex)
                text = re.sub(r"\\x([0-9a-f]{2})", lambda h: chr(int(h.group(1), 16)), text)
                path_ = text.split('"', 2)[1]
                self.name[p] = os.path.basename(path_)
                env = re.search(r'"CNI_COMMAND=([A-Z]+)"', text)
                self.command[p] = env.group(1) if env else ""
                self.start[p] = t
                self.order.append(p)
            elif call == "exit_group":
                self.end[p] = t
            elif call == "setns":
                self.bump(p, "setns")
            elif call in ("nanosleep", "clock_nanosleep"):
                self.bump(p, "sleep")
            self.syscalls.append((p, text))

    def bump(self, p, what):
        self.counts[(p, what)] = self.counts.get((p, what), 0) + 1

    def plugin_of(self, p):
        """The nearest plugin process at or above p (None: the runtime itself)."""
        while p is not None:
            if self.name.get(p) in PLUGINS:
                return p
            p = self.parent.get(p)
        return None

    def rows(self):
        """Per plugin execution, in order: [name, command, wall ms, spawned, firewall runs,
        setns, sleeps, delegated-by]."""
        out = []
        for p in self.order:
            if self.name[p] not in PLUGINS:
                continue
            spawned = fw = 0
            for q in self.order:
                if q != p and self.plugin_of(self.parent.get(q)) == p:
                    spawned += 1
                    fw += self.name[q].startswith(FIREWALL_TOOLS)
            # Threads and non-exec children count with the plugin they belong to.
            own = [q for q in set(self.proc.values()) if self.plugin_of(q) == p]
            setns = sum(self.counts.get((q, "setns"), 0) for q in own)
            sleeps = sum(self.counts.get((q, "sleep"), 0) for q in own)
            wall = (self.end.get(p, self.start[p]) - self.start[p]) * 1000
            by = self.plugin_of(self.parent.get(p))
            out.append([self.name[p], self.command[p], wall, spawned, fw, setns, sleeps,
                        self.name[by] if by else ""])
        return out

    def etcd_requests(self, port):
        """Per plugin process: gRPC requests sent to etcd (HEADERS frames on its connections)."""
        fds = set()
        stream = {}
        for p, text in self.syscalls:
            call = text.split("(", 1)[0]
            if call == "connect" and f"htons({port})" in text:
                fds.add((p, int(text.split("(", 1)[1].split(",", 1)[0])))
            elif call in ("write", "writev", "sendto", "sendmsg"):
                fd = int(text.split("(", 1)[1].split(",", 1)[0])
                if (p, fd) in fds:
                    data = bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", text))
                    stream[(p, fd)] = stream.get((p, fd), b"") + data
        requests = {}
        for (p, _), data in stream.items():
            if data.startswith(PREFACE):
                data = data[len(PREFACE):]
            n, i = 0, 0
            while i + 9 <= len(data):
                length = int.from_bytes(data[i:i + 3], "big")
                n += data[i + 3] == 1
                i += 9 + length
            plugin = self.plugin_of(p)
            requests[plugin] = requests.get(plugin, 0) + n
        return requests


def main():
    label, verb, port = sys.argv[1:4]
    args = sys.argv[4:]
    light, net = args[: args.index("--")], args[args.index("--") + 1]
    traces = [Trace(f) for f in light]
    rows = [t.rows() for t in traces]
    shape = [(r[0], r[1]) for r in rows[0]]
    rows = [r for r in rows if [(x[0], x[1]) for x in r] == shape]
    nt = Trace(net)
    etcd = {}
    for p, n in nt.etcd_requests(port).items():
        if p is not None:
            etcd[nt.order.index(p) if p in nt.order else -1] = n
    plugin_order = [p for p in nt.order if nt.name[p] in PLUGINS]
    total = 0.0
    for i, (name, command) in enumerate(shape):
        wall = statistics.median(r[i][2] for r in rows)
        spawned, fw, setns, sleeps, by = rows[0][i][3:]
        requests = 0
        if i < len(plugin_order):
            requests = etcd.get(nt.order.index(plugin_order[i]), 0)
        if not by:
            total += wall
        who = f"  {name}" if by else name
        print(f"chain      {label:<8} {verb:<3} {who:<17} {command or '-':<7} {wall:6.1f} ms  "
              f"spawned {spawned:2}  nft/iptables {fw:2}  etcd requests {requests:2}  "
              f"setns {setns:2}  sleeps {sleeps}")
    print(f"chain      {label:<8} {verb:<3} {'(plugins, sum)':<17} {'':<7} {total:6.1f} ms  "
          f"(median of {len(rows)} traced calls; indented: run by the plugin above)")


if __name__ == "__main__":
    main()
