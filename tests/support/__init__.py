"""What the tests and the benchmarks share: real servers, users, trained models, Airflow homes.

Plain modules, imported by tests/ and bench/ alike; the conftest files only declare fixtures on
top of them. Nothing here is collected by pytest.

- paths: the repository, the real data, the tools the suite runs (and the make target of each);
- servers: free ports, real uvicorn processes (`start_uvicorn`, `start_serve`), `wait_for`;
- settings: one test's Settings (its own database and var/) and its own database;
- users: one user per role, their passwords, logging in;
- models: the session's small trained models (trained once), registering more versions;
- airflow: a migrated Airflow home made once and copied per test; driving a retrain DAG run;
- cli: the project's Typer app in-process (Typer's CliRunner), for commands whose process
  lifecycle is not what a test checks;
- helm, ui, reliability, cluster: the helpers of those test folders.
"""
