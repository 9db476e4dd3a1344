-- Runs once, when the PostgreSQL volume is first created (docker-entrypoint-initdb.d).
-- Two databases: `sciatic` (the service's own, owned by role sciatic) and
-- `airflow` (Airflow's metadata and Celery results, owned by role airflow).
-- Passwords come from the container's environment (docker/.env), never from this file.
\getenv sciatic_password SCIATIC_DB_PASSWORD
\getenv airflow_password AIRFLOW_DB_PASSWORD

-- CREATEROLE: the migrations create the NOLOGIN group role sciatic_research,
-- and the init job creates the research staff's login role and grants it.
CREATE ROLE sciatic LOGIN CREATEROLE PASSWORD :'sciatic_password';
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE sciatic OWNER sciatic;
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE sciatic FROM PUBLIC;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
