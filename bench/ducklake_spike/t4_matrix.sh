#!/bin/sh
# Q4 matrix: catalog x processes x mode. Results appended to t4_results.jsonl
cd /tmp/ducklake
for kind in sqlite pg; do
  for n in 4 8; do
    for mode in append update inlined hotrow; do
      .venv/bin/python t4_concurrency.py $kind $n $mode 100 | tail -1
    done
  done
done
LOCKFILE=1 .venv/bin/python t4_concurrency.py sqlite 8 update 100 | tail -1
LOCKFILE=1 .venv/bin/python t4_concurrency.py sqlite 8 append 100 | tail -1
