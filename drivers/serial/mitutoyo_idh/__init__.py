"""Mitutoyo ID-H digimatic indicators on RS-232C: the ``mitutoyo-idh`` driver (see README.md)."""

from drivers.serial.mitutoyo_idh.codec import MODES, IdhReply, claimed_id, command, parse_reply
from drivers.serial.mitutoyo_idh.driver import Judgement, MitutoyoIdhConfig, MitutoyoIdhDriver

__all__ = [
    "MODES",
    "IdhReply",
    "Judgement",
    "MitutoyoIdhConfig",
    "MitutoyoIdhDriver",
    "claimed_id",
    "command",
    "parse_reply",
]
