#!/bin/sh
# Service: RabbitMQ (Debian's, never the packaged service) in the foreground, node aio@localhost,
# AMQP on 127.0.0.1:$ENVBUILD_PORT_AMQP, data, logs and config in $ENVBUILD_RUN/rabbitmq
# (prestart.sh). Its epmd runs in the foreground of this process group on
# 127.0.0.1:$ENVBUILD_PORT_EPMD: rabbitmq-server would start a daemonised one that outlives
# `down`. Readiness: the AMQP port (each rabbitmqctl call starts an Erlang VM).
set -eu
r=${ENVBUILD_RUN:?}/rabbitmq
export HOME=$r/home RABBITMQ_NODENAME=aio@localhost RABBITMQ_MNESIA_BASE=$r/mnesia \
    RABBITMQ_LOG_BASE=$r/log RABBITMQ_CONFIG_FILE=$r/rabbitmq.conf \
    RABBITMQ_CONF_ENV_FILE=$r/rabbitmq-env.conf RABBITMQ_ENABLED_PLUGINS_FILE=$r/enabled_plugins \
    RABBITMQ_ADVANCED_CONFIG_FILE=$r/advanced.config RABBITMQ_PID_FILE=$r/rabbitmq.pid \
    RABBITMQ_DIST_PORT=${ENVBUILD_PORT_RABBIT_DIST:?} ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_EPMD_PORT=${ENVBUILD_PORT_EPMD:?}
epmd -address 127.0.0.1 -port "$ERL_EPMD_PORT" &
exec /usr/lib/rabbitmq/bin/rabbitmq-server
