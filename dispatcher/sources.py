"""Where a deployment's code lives, and fetching it: a git repository or a local directory.

A deployment stores its source as one string. A local directory is its absolute path; a git
repository is its URL, optionally followed by ``#`` and ``&``-separated settings::

    https://github.com/acme/flows.git#branch=main
    https://github.com/acme/private.git#tag=v1.2&credential_env=GITHUB_TOKEN
    file:///srv/repos/flows#commit=3f2c1a9...

``credential_env`` names an environment variable of the job that holds a token for a
private repository; the token itself is never stored. When cloning, git gets it through
``GIT_ASKPASS`` (a small script that reads it from the environment), never in a URL or any
argv, so it cannot appear in logs, error messages or the process list.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

GIT_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
SCP_LIKE = re.compile(r"^[\w.\-]+@[\w.\-]+:")  # git@github.com:acme/flows.git
SETTINGS = ("branch", "tag", "commit", "credential_env", "username")
CLONE_TIMEOUT_SECONDS = 600.0
# The askpass script reads the secret from these variables of git's own environment.
SECRET_VAR = "PUSHPOOL_GIT_SECRET"
USER_VAR = "PUSHPOOL_GIT_USERNAME"
ASKPASS_SCRIPT = f"""#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "${USER_VAR}" ;;
  *) printf '%s\\n' "${SECRET_VAR}" ;;
esac
"""
USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)[^/@\s]+@", re.IGNORECASE)


class SourceError(Exception):
    """The source is malformed or could not be fetched; the message names the fix."""


@dataclass(frozen=True)
class GitSource:
    """A git repository: at most one of branch, tag or commit (default: its default branch)."""

    url: str
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    credential_env: str | None = None  # the job's env var holding a token for it
    username: str | None = None  # sent with the token; most hosts accept any

    def __post_init__(self) -> None:
        refs = [name for name in ("branch", "tag", "commit") if getattr(self, name)]
        if len(refs) > 1:
            raise SourceError(f"give at most one of branch, tag or commit (got {refs})")
        if not is_git_url(self.url):
            raise SourceError(f"{self.url!r} is not a git URL; use https://, ssh://, "
                              "file:// or git@host:path")
        if "#" in self.url:
            raise SourceError(f"a git URL must not contain '#': {self.url!r}")
        if USERINFO.search(self.url) and self.credential_env:
            raise SourceError("put the token in credential_env only, not in the URL too")
        if self.credential_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*",
                                                    self.credential_env):
            raise SourceError(f"credential_env {self.credential_env!r} is not an environment "
                              "variable name")
        if self.commit and not re.fullmatch(r"[0-9a-fA-F]{7,64}", self.commit):
            raise SourceError(f"commit {self.commit!r} is not a commit hash")

    def to_string(self) -> str:
        settings = {name: getattr(self, name) for name in SETTINGS if getattr(self, name)}
        return self.url + ("#" + urlencode(settings) if settings else "")

    @property
    def ref(self) -> str | None:
        return self.branch or self.tag or self.commit


def is_git_url(text: str) -> bool:
    return text.startswith(GIT_SCHEMES) or bool(SCP_LIKE.match(text))


def parse_source(text: str) -> GitSource | Path:
    """A stored source string as a GitSource or a local directory path."""
    if not text:
        raise SourceError("the source is empty; give a git URL or a directory")
    if not is_git_url(text):
        return Path(text).expanduser()
    url, _, fragment = text.partition("#")
    settings: dict[str, str] = {}
    for name, value in parse_qsl(fragment, keep_blank_values=True):
        if name not in SETTINGS:
            raise SourceError(f"unknown source setting {name!r} in {redact(text)!r}; "
                              f"known: {', '.join(SETTINGS)}")
        settings[name] = value
    return GitSource(url, **settings)


def redact(text: str, secret: str | None = None) -> str:
    """``text`` without URL credentials (user:token@) and without ``secret``."""
    text = USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    if secret:
        text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------------------- fetching


def git_commands(source: GitSource, dest: Path) -> list[list[str]]:
    """The git invocations that fetch ``source`` into ``dest`` (shallow, one revision)."""
    # No credential helper may store or offer anything; askpass alone answers.
    git = ["git", "-c", "credential.helper="]
    if source.commit:
        return [[*git, "init", "--quiet", str(dest)],
                [*git, "-C", str(dest), "fetch", "--quiet", "--depth", "1", "--",
                 source.url, source.commit],
                [*git, "-C", str(dest), "checkout", "--quiet", "--detach", "FETCH_HEAD"]]
    clone = [*git, "clone", "--quiet", "--depth", "1"]
    if source.branch or source.tag:
        clone += ["--branch", str(source.branch or source.tag)]
    return [[*clone, "--", source.url, str(dest)]]


def _askpass_env(source: GitSource, environ: dict[str, str], workdir: Path
                 ) -> tuple[dict[str, str], str | None]:
    """git's environment: no prompts, and the credential (if any) behind GIT_ASKPASS."""
    env = {k: v for k, v in environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    if not source.credential_env:
        return env, None
    secret = environ.get(source.credential_env)
    if not secret:
        raise SourceError(f"the source needs a token in ${source.credential_env}, which is "
                          "not set in the job's environment; set it in the pool's or the "
                          "deployment's env job variable")
    script = workdir / "askpass.sh"
    script.write_text(ASKPASS_SCRIPT)
    script.chmod(stat.S_IRWXU)
    env.update({"GIT_ASKPASS": str(script), SECRET_VAR: secret,
                USER_VAR: source.username or "x-access-token"})
    return env, secret


def fetch_git(source: GitSource, dest: Path, environ: dict[str, str] | None = None) -> None:
    """Clone ``source`` into ``dest`` (which must not exist or be empty)."""
    if shutil.which("git") is None:
        raise SourceError("git is not installed in the job's image; install git or deploy "
                          "from an image that contains the code")
    environ = dict(os.environ if environ is None else environ)
    with tempfile.TemporaryDirectory(prefix="pushpool-git-") as tmp:
        env, secret = _askpass_env(source, environ, Path(tmp))
        for argv in git_commands(source, dest):
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                      timeout=CLONE_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise SourceError(f"git took longer than {CLONE_TIMEOUT_SECONDS:.0f}s to fetch "
                                  f"{redact(source.url, secret)}") from None
            if done.returncode != 0:
                detail = redact((done.stderr or done.stdout).strip(), secret)
                last = detail.splitlines()[-1] if detail else f"exit code {done.returncode}"
                raise SourceError(f"could not fetch {redact(source.url, secret)}"
                                  f"{' at ' + source.ref if source.ref else ''}: {last}")


def fetch_source(text: str, workdir: Path, environ: dict[str, str] | None = None) -> Path:
    """The directory holding the source's code: cloned under ``workdir``, or the local one."""
    source = parse_source(text)
    if isinstance(source, Path):
        if not source.is_dir():
            raise SourceError(f"the source directory {source} does not exist here; a local "
                              "source only works for pools on the same machine (use a git "
                              "URL otherwise)")
        return source.resolve()
    dest = workdir / "source"
    fetch_git(source, dest, environ)
    return dest
