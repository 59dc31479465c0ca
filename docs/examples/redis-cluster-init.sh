#!/bin/sh
# Makes one Redis Cluster of the empty masters given as host:port (three or more, no replicas),
# unless the first already belongs to a healthy one, then waits until every node reports
# cluster_state:ok. docker-compose.yml's cluster profile runs it once, before the gateway.
#
#   sh docs/examples/redis-cluster-init.sh 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
set -eu

if [ "$#" -lt 3 ]; then
    echo "usage: $0 HOST:PORT HOST:PORT HOST:PORT..." >&2
    exit 64
fi

cluster_ok() {
    redis-cli -h "${1%:*}" -p "${1##*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

# A second `up` finds the cluster already made, and creating it again would fail.
if ! cluster_ok "$1"; then
    redis-cli --cluster create "$@" --cluster-replicas 0 --cluster-yes
fi

for node in "$@"; do
    tries=0
    until cluster_ok "$node"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 30 ]; then
            echo "$node: not cluster_state:ok after 30 s" >&2
            exit 1
        fi
        sleep 1
    done
done
echo "redis cluster ok: $*"
