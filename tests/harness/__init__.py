"""The test harness: processes started and stopped by pid, private brokers, a TCP proxy
that cuts connections, and broker parametrization, shared by the chaos, ledger and fuzz
suites.

- `processes`: `Process` (one command in its own session: stop, kill, SIGKILL a child,
  SIGSTOP/SIGCONT the group) and `Processes` (what a test started; `caraway_worker()`,
  `celery_worker()`; `stop_all()` at teardown);
- `redis`: `Server` (private ``redis-server``, appendonly on request, `restart()` on the
  same port), `SentinelGroup`, `Cluster`;
- `rabbit`: `private_node()` (one private node), `RabbitCluster`;
- `proxy`: `TcpProxy` (`cut()`, `blackhole()`, `restore()`);
- `brokers`: `open_broker(kind, workdir)` for ``KINDS`` = sqlite, redis, amqp, postgres;
- `fixtures`: pytest fixtures over the above (`processes`, `redis_server`, `rabbit_node`,
  `tcp_proxy`, `broker`);
- `waiting`: `wait_for` (a deadline, never a bare sleep) and `require` (skip locally,
  fail in CI).
"""
