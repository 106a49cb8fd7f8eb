"""medmask.console: RLlib's chatter to a file, errors and everything else on the console."""

from __future__ import annotations

import io
import logging

from medmask.console import RLLIB_INTERNAL_DEPRECATIONS, ChatterFilter


def _console() -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    return logging.StreamHandler(stream), stream


def test_chatter_goes_to_the_file_and_the_rest_stays(tmp_path) -> None:
    path = tmp_path / "rllib.log"
    file_handler = logging.FileHandler(path, delay=True)
    console, stream = _console()
    console.addFilter(ChatterFilter(file_handler))
    logger = logging.getLogger("test_console.ray")
    logger.propagate, logger.handlers = False, [console]
    appo = ("DeprecationWarning: `ray.rllib.algorithms.appo.torch.appo_torch_rl_module."
            "APPOTorchRLModule` has been deprecated. Use `...DefaultAPPOTorchRLModule` instead.")
    module = ("DeprecationWarning: `RLModule(config=[RLModuleConfig object])` has been "
              "deprecated. Use `RLModule(observation_space=..)` instead.")
    for message in (appo, module):  # RLlib's own wording (ray/_common/deprecation.py)
        assert any(m in message for m in RLLIB_INTERNAL_DEPRECATIONS)
        logger.warning(message)
    other = "DeprecationWarning: `something medmask calls` has been deprecated."
    logger.warning(other)
    rllib = logging.getLogger("ray.rllib.algorithms.algorithm_config.test")
    rllib.propagate, rllib.handlers = False, [console]
    rllib.warning("You are running APPO on the new API stack!")
    rllib.error("an RLlib error")
    file_handler.close()
    shown, logged = stream.getvalue(), path.read_text()
    assert other in shown and "an RLlib error" in shown
    assert "APPOTorchRLModule" not in shown and "RLModuleConfig" not in shown
    assert "new API stack" not in shown
    assert "APPOTorchRLModule" in logged and "RLModuleConfig" in logged
    assert "new API stack" in logged and "an RLlib error" not in logged
