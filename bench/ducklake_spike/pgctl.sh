#!/bin/sh
# start|stop a throwaway PostgreSQL 15 in /tmp/ducklake/pg (socket dir same, port 5499, no TCP)
B=/usr/lib/postgresql/15/bin
D=/tmp/ducklake/pg/data
case "$1" in
 start)
  [ -d $D ] || su lakepg -c "$B/initdb -D $D -U lake --auth=trust >/tmp/ducklake/pg/initdb.log 2>&1"
  su lakepg -c "$B/pg_ctl -D $D -l /tmp/ducklake/pg/log -w -o \"-k /tmp/ducklake/pg -p 5499 -c listen_addresses='' -c max_connections=200 -c fsync=on\" start" ;;
 stop) su lakepg -c "$B/pg_ctl -D $D -m fast stop" ;;
esac
