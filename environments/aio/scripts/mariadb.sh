#!/bin/sh
# mariadb.sh serve | start-private DIR | stop-private DIR — the machine's MariaDB (Debian's
# mariadbd, never the packaged service), data in var/mysql of the machine root.
#   serve               the service: foreground, 127.0.0.1:$ENVBUILD_PORT_MYSQL, socket and
#                       pid in $ENVBUILD_RUN; runs $ENVBUILD_RUN/mysql-init.sql (written by
#                       prestart.sh: this up's passwords) at every start
#   start-private DIR   for a stage: socket DIR/sock and 127.0.0.1:$ENVBUILD_PORT_MYSQL (the
#                       stage picks a free one), in the background; returns once it answers
#   stop-private DIR    clean shutdown of that instance (the data folder is then consistent)
set -eu
cd "${ENVBUILD_ROOT:?}"
user=$(id -un)
# Sizes for a small test cloud; flushing once a second instead of at every commit (a crash
# loses at most a second, and a test cloud's data never outlives its run).
set -- "$@" --no-defaults --datadir="$PWD/var/mysql" --user="$user" --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    --innodb-buffer-pool-size=128M --innodb-log-file-size=48M --innodb-flush-log-at-trx-commit=2 \
    --max-connections=1000 --skip-log-bin --log-warnings=1
case ${1:?usage: mariadb.sh serve|start-private DIR|stop-private DIR} in
    serve)
        shift
        run=${ENVBUILD_RUN:?}
        exec /usr/sbin/mariadbd "$@" --bind-address=127.0.0.1 --port="${ENVBUILD_PORT_MYSQL:?}" \
            --socket="$run/mysqld.sock" --pid-file="$run/mysqld.pid" --init-file="$run/mysql-init.sql"
        ;;
    start-private)
        dir=${2:?}
        shift 2
        [ -d var/mysql/mysql ] || mariadb-install-db --no-defaults --datadir="$PWD/var/mysql" \
            --user="$user" --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
            || { cat "$dir/install.log" >&2; exit 1; }
        /usr/sbin/mariadbd "$@" --bind-address=127.0.0.1 --port="${ENVBUILD_PORT_MYSQL:?}" --socket="$dir/sock" --pid-file="$dir/pid" \
            --log-error="$dir/error.log" &
        for _ in $(seq 300); do
            mariadb-admin --socket="$dir/sock" ping >/dev/null 2>&1 && exit 0
            kill -0 $! 2>/dev/null || break
            sleep 0.2
        done
        cat "$dir/error.log" >&2
        echo "mariadb.sh: the private mariadbd did not answer" >&2
        exit 1
        ;;
    stop-private)
        dir=${2:?}
        pid=$(cat "$dir/pid")
        mariadb-admin --socket="$dir/sock" shutdown
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
        ;;
    *) echo "mariadb.sh: unknown command $1" >&2; exit 2 ;;
esac
