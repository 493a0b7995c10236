#!/bin/bash
# usage: run-cpu.sh lite|node N [PER_TICK] — server CPU (process.cpuUsage) per message written, one stream.
B=/work/main/node_modules/.bin/bun
PORT=$((40000 + RANDOM % 10000))
$B /tmp/h2lite/server.ts $1 $PORT > /tmp/h2lite/cpu-s.log 2>&1 &
SP=$!
sleep 2
node /tmp/h2lite/flood-client.cjs $PORT 1000 > /dev/null   # warm-up
kill -WINCH $SP; sleep 0.3
node /tmp/h2lite/flood-client.cjs $PORT $2 ${3:-0} > /tmp/h2lite/cpu-c.log
kill -WINCH $SP; sleep 0.3
A=$(grep '^cpu' /tmp/h2lite/cpu-s.log | tail -2 | head -1 | sed 's/.*"total":\([0-9]*\).*/\1/')
Z=$(grep '^cpu' /tmp/h2lite/cpu-s.log | tail -1 | sed 's/.*"total":\([0-9]*\).*/\1/')
echo "$1 n=$2 per_tick=${3:-0} server_cpu_us=$((Z-A)) us_per_message=$(echo "scale=3; ($Z-$A)/$2" | bc) client: $(cat /tmp/h2lite/cpu-c.log)"
kill $SP
