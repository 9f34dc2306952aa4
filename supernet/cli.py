"""The shell of the hydra commands (``supernet.train``, ``search.run``): bad input ends in one line."""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def hydra_command(config_name: str, run: Callable[[Any], Any], user_errors: tuple[type[BaseException], ...],
                  on_interrupt: str | None = None) -> None:
    """Runs ``run(cfg)`` on ``conf/<config_name>.yaml`` plus the command line's overrides; a user error
    prints ``error: <message>`` and exits 1; with ``on_interrupt``, Ctrl-C or SIGTERM (a scheduler's
    stop) prints it and exits 128 + the signal number."""
    import hydra

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def _main(cfg) -> None:
        received = []
        if on_interrupt is not None:  # SIGTERM ends the work as Ctrl-C does: results so far are on disk

            def terminate(signum, frame):
                received.append(signum)
                raise KeyboardInterrupt

            signal.signal(signal.SIGTERM, terminate)
        try:
            run(cfg)
        except user_errors as err:
            sys.exit(f"error: {err}")
        except KeyboardInterrupt:
            if on_interrupt is None:
                raise
            print(f"\n{on_interrupt}", file=sys.stderr)
            sys.exit(128 + (received[0] if received else signal.SIGINT))

    _main()
