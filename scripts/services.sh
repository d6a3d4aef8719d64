# The services the test suite needs, started when they are installed but not running:
# sourced by .ci/run (CI) and scripts/test (a developer's machine). Each ensure_* returns
# once its service answers, or says in one line what to do and fails.

service_missing() {
    echo "$1 is not installed: $2" >&2
    return 1
}

ensure_redis() {
    command -v redis-server >/dev/null || { service_missing Redis "apt-get install redis-server"; return 1; }
    if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return; fi
    echo "starting redis-server"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 50); do
        redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && return
        sleep 0.2
    done
    echo "redis did not start" >&2; return 1
}

ensure_rabbitmq() {
    command -v rabbitmq-server >/dev/null || { service_missing RabbitMQ "apt-get install rabbitmq-server"; return 1; }
    if rabbitmqctl -q status >/dev/null 2>&1; then
        rabbitmqctl -q start_app >/dev/null 2>&1 || true
        rabbitmqctl -q await_startup && return
    fi
    echo "starting rabbitmq-server"
    rabbitmq-server -detached
    rabbitmqctl await_startup
}

ensure_postgres() {
    # the PostgreSQL broker and the SQL result store's tests make databases of their own
    command -v pg_ctlcluster >/dev/null || { service_missing PostgreSQL "apt-get install postgresql"; return 1; }
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
    echo "starting postgresql"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 50); do
        pg_isready -q -h 127.0.0.1 -p 5432 && return
        sleep 0.2
    done
    echo "postgresql did not start" >&2; return 1
}

ensure_mariadb() {
    # the SQL result store's MySQL dialect is tested on the machine's MariaDB
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] \
        || { service_missing MariaDB "apt-get install mariadb-server"; return 1; }
    if mysqladmin -h 127.0.0.1 -u root status >/dev/null 2>&1; then return; fi
    echo "starting mariadb"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 50); do
        mysqladmin -h 127.0.0.1 -u root status >/dev/null 2>&1 && return
        sleep 0.2
    done
    echo "mariadb did not start" >&2; return 1
}

ensure_services() {
    ensure_redis && ensure_rabbitmq && ensure_postgres && ensure_mariadb
}
