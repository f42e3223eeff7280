#!/usr/bin/env python3
"""Runs the shared failover probe (../shared/bench/failover/failover_probe.py, not copied)
with one change: a connection is named by the PostgreSQL server that answers it
(127.0.0.1:inet_server_port()) instead of by the host:port in the DSN.

Why: the shared probe tells "a different node took the write" from `conn.info.host/port`.
Through a proxy (Lifeboat's write port) that is always the proxy's address, so a failover
would never be seen: kill mode would wait until --max-wait, blip mode would report no
failover even when one happened. Asking the server which port it listens on names the
member behind the proxy; with a direct or multi-host DSN the result is the same as before.

Usage: failover_probe_node.py --probe PATH/failover_probe.py [the probe's own options]
"""
import importlib.util
import sys
import types

import psycopg2
import psycopg2.extensions


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--probe":
        sys.exit(__doc__)
    probe_path, rest = args[1], args[2:]

    class NodeConnection(psycopg2.extensions.connection):
        """A connection whose .info.host/.info.port are the answering server's."""
        _node = None

        @property
        def info(self):
            if self._node is None:
                return super().info
            return self._node

    real_connect = psycopg2.connect

    def connect(*a, **kw):
        kw.setdefault("connection_factory", NodeConnection)
        c = real_connect(*a, **kw)
        # Outside a transaction (autocommit), so the probe may set autocommit again.
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT coalesce(host(inet_server_addr()), 'local'), inet_server_port()")
            host, port = cur.fetchone()
        c._node = types.SimpleNamespace(host=host, port=port)
        return c

    psycopg2.connect = connect
    spec = importlib.util.spec_from_file_location("failover_probe", probe_path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    sys.argv = [probe_path] + rest
    probe.main()


if __name__ == "__main__":
    main()
