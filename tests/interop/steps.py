"""Steps of an interop script, shared by the slixmpp scripts in this folder and by
tests/federation/fed_client.py (which puts this folder on its `sys.path`).

Owns: the one-line-per-step output the Rust tests show when a script fails ("STEP name ...",
"  ok   name", "FAIL name: why"), the time since start on every line, and running the script's
coroutine under an overall timeout with the exit codes the tests read: 0 passed, 1 a step
failed, 2 the timeout hit (the line names the step that was pending). Must not know XMPP.

A script imports it from its own folder (`import steps` works because Python puts the
script's directory first on `sys.path`).
"""

import asyncio
import logging
import sys
import time

T0 = time.monotonic()
_current = "start"


class StepFailed(Exception):
    pass


def say(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def step(name):
    """Announces a step; a failure or the overall timeout names the step that was pending."""
    global _current
    _current = name
    say(f"STEP {name} ...")


def ok(detail=""):
    say(f"  ok   {_current}" + (f": {detail}" if detail else ""))


def fail(detail):
    raise StepFailed(f"{_current}: {detail}")


def current():
    return _current


def log_to_stderr(verbose):
    """slixmpp's own log (raw XML with `verbose`), kept out of the step lines on stdout."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)


def run(work, timeout, passed="all steps passed"):
    """Runs the coroutine `work` to the end or for `timeout` seconds; returns the exit code.

    Any exception is a failed step, named with its type. slixmpp leaves filter tasks pending
    when a client disconnects; they are cancelled so asyncio logs no "Task was destroyed but
    it is pending" noise into the output.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(work, timeout))
    except StepFailed as e:
        say(f"FAIL {e}")
        return 1
    except asyncio.TimeoutError:
        say(f"FAIL overall timeout of {timeout}s during step: {_current}")
        return 2
    except Exception as e:  # noqa: BLE001 - any surprise is a failed step, with its type
        say(f"FAIL {_current}: {type(e).__name__}: {e}")
        return 1
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    say(passed)
    return 0
