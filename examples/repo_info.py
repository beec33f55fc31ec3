"""The classic first flow: a repository's statistics from the GitHub API, deployed from git.

Run it here and now::

    python -c "from repo_info import get_repo_info; get_repo_info('PrefectHQ/prefect')"

Deploy it to the process pool 'local', from a git repository that holds this file, on a
cron schedule (1 am every day), then run it and read its logs::

    pushpool work-pool create local --type process
    python repo_info.py https://github.com/you/your-repo.git
    pushpool deployment run 'get-repo-info/my-first-deployment'
    pushpool run logs <RUN ID>

PUSHPOOL_EXAMPLE_GITHUB_API replaces https://api.github.com (the tests serve the answer
from a local server).
"""

from __future__ import annotations

import os
import sys

import httpx

from dispatcher import flow


@flow(log_prints=True)
def get_repo_info(repo_name: str = "PrefectHQ/prefect") -> dict[str, int]:
    """Print a GitHub repository's stars and forks."""
    base_url = os.environ.get("PUSHPOOL_EXAMPLE_GITHUB_API", "https://api.github.com")
    response = httpx.get(f"{base_url.rstrip('/')}/repos/{repo_name}", timeout=30)
    response.raise_for_status()
    repo = response.json()
    print(f"{repo_name} repository statistics 🤓:")
    print(f"Stars 🌠 : {repo['stargazers_count']}")
    print(f"Forks 🍴 : {repo['forks_count']}")
    return {"stars": repo["stargazers_count"], "forks": repo["forks_count"]}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python repo_info.py GIT_URL  (a repository holding this file at its "
                 "top level, e.g. https://github.com/you/your-repo.git)")
    # Offline (the quickstart): the runs ask the same stand-in API as this shell.
    api = os.environ.get("PUSHPOOL_EXAMPLE_GITHUB_API")
    get_repo_info.from_source(
        source=sys.argv[1],
        entrypoint="repo_info.py:get_repo_info",
    ).deploy(
        name="my-first-deployment",
        work_pool_name="local",
        cron="0 1 * * *",
        job_variables={"env": {"PUSHPOOL_EXAMPLE_GITHUB_API": api}} if api else None,
    )
