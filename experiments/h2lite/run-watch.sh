#!/bin/bash
# usage: run-watch.sh lite|node W ROUNDS — server CPU per message in a fan-out to W connections.
PORT=$((40000 + RANDOM % 10000))
/work/main/node_modules/.bin/bun /tmp/h2lite/server.ts $1 $PORT > /tmp/h2lite/watch-s.log 2>&1 &
SP=$!
sleep 2
node /tmp/h2lite/watch-client.cjs $PORT $2 20 > /dev/null   # warm-up
node /tmp/h2lite/watch-client.cjs $PORT $2 $3 > /tmp/h2lite/watch-c.log
sleep 0.5
echo "$(grep '^watch' /tmp/h2lite/watch-s.log | tail -1) client: $(cat /tmp/h2lite/watch-c.log)"
kill $SP
