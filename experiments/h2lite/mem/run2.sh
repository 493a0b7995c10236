#!/bin/bash
# usage: run.sh variant n settingsjson
B=/work/main/node_modules/.bin/bun
PORT=$((40000 + RANDOM % 10000))
$B ${SERVER:-/tmp/mem/server.ts} $1 $PORT "${3:-{\}}" > /tmp/mem/s.log 2>&1 &
SP=$!
sleep ${WAIT:-1.5}
kill -USR1 $SP; sleep 0.5
R0=$(grep VmRSS /proc/$SP/status | awk '{print $2}')
$B /tmp/mem/client2.ts $PORT $2 ${STREAM:-} > /tmp/mem/c.log 2>&1 &
CP=$!
sleep $(( 4 + $2 / 2000 ))
sleep 2
kill -USR2 $SP; sleep 1; kill -USR2 $SP; sleep 1
kill -USR1 $SP; sleep 1
R1=$(grep VmRSS /proc/$SP/status | awk '{print $2}')
echo "$1 n=$2 settings=${3:-{\}} rss0=${R0}KB rss1=${R1}KB per_conn=$(( (R1-R0)*1024/$2 ))B $(cat /tmp/mem/c.log)"
kill $CP $SP
