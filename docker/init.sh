#!/usr/bin/env bash
# One-off setup of a new or upgraded installation (the compose service "init").
# Every step is idempotent: run it again after each upgrade.
set -euo pipefail

echo "init: Airflow metadata database"
airflow db migrate

echo "init: sciatic database schema"
sciatic db upgrade

echo "init: Airflow pool gpu (${SCIATIC_GPU_POOL_SLOTS:-1} slot(s), one per GPU)"
sciatic airflow setup

echo "init: research login role"
python /opt/sciatic/docker/research_role.py

echo "init: done"
