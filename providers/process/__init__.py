"""Local child processes (pool type ``process``): the embedded default.

``adapter`` holds the contract's calls; ``supervisor`` is the small standalone program
that owns each job's process, started as a script so the job outlives the server.
"""

from providers.process.adapter import PROVIDER, ProcessProvider, job_env, runs_root

__all__ = ["PROVIDER", "ProcessProvider", "job_env", "runs_root"]
