"""SEED stream codes of the board's channels: network, station, location and a channel code per component.

A channel code is band + instrument + orientation (SEED 2.4 manual, appendix A; the FDSN source
identifier rules keep the same letters). The band code follows from the sampling rate and the
sensor's corner period: a geophone or short-period seismometer (corner below 10 s) at 1000-5000 Hz
is ``G``, at 250-1000 Hz ``D``, at 80-250 Hz ``E``, at 10-80 Hz ``S``; a sensor flat to long periods
(an accelerometer) takes the broadband letters ``F``, ``C``, ``H``, ``B``; above 5000 Hz the FDSN
source identifier specification (v1.0) adds ``J`` whatever the sensor. The instrument code is
``P`` for a geophone, ``H`` for a high-gain seismometer, ``N`` for an accelerometer.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import UserError
from edge.gateway.config import StreamConfig

INSTRUMENT_CODE = {"geophone": "P", "seismometer": "H", "accelerometer": "N"}
# (lowest rate Hz, short-period letter, broadband letter), highest band first.
_BANDS = ((5000.0, "J", "J"), (1000.0, "G", "F"), (250.0, "D", "C"), (80.0, "E", "H"), (10.0, "S", "B"))
# Dip and azimuth (degrees, SEED convention: dip -90 is up) of the standard orientation codes; the
# numbered codes 1, 2, 3 are axes of unknown azimuth, reported as 0 (StationXML needs a number).
ORIENTATION = {"Z": (-90.0, 0.0), "N": (0.0, 0.0), "E": (0.0, 90.0)}


def band_code(fs: float, broadband: bool = False) -> str:
    """The SEED band code of a channel sampled at ``fs`` Hz (short-period letters unless ``broadband``)."""
    for lowest, short, broad in _BANDS:
        if fs >= lowest:
            return broad if broadband else short
    if fs > 1.0:
        return "M"
    raise ValueError(f"{fs:g} Hz: no band code for rates of 1 Hz or less here; set stream.band")


def orientation_codes(channels: int, configured: str = "") -> str:
    """One orientation code per channel: the configured ones, else ZNE (3), Z (1), 1..9 (others)."""
    if configured:
        if len(configured) != channels:
            raise ValueError(f"stream.orientation = {configured!r} names {len(configured)} channels; "
                             f"the board sends {channels}")
        return configured
    if channels > 9:
        raise ValueError(f"{channels} channels: SEED has single-character orientation codes, at most 9 numbered")
    return "ZNE" if channels == 3 else "Z" if channels == 1 else "".join(str(i + 1) for i in range(channels))


@dataclass(frozen=True)
class StreamCodes:
    """The SEED identity of the board's channels, in the order of the board's rows."""

    network: str
    station: str
    location: str
    channels: tuple[str, ...]  # e.g. ("GPZ", "GPN", "GPE")

    def nslc(self, i: int) -> str:
        """``NET.STA.LOC.CHA`` of row ``i`` (the SEED/ObsPy trace id)."""
        return f"{self.network}.{self.station}.{self.location}.{self.channels[i]}"

    def source_id(self, i: int) -> str:
        """The FDSN source identifier of row ``i`` (``FDSN:NET_STA_LOC_B_I_O``), as libmseed names streams."""
        c = self.channels[i]
        return f"FDSN:{self.network}_{self.station}_{self.location}_{c[0]}_{c[1]}_{c[2:]}"

    def as_fields(self) -> dict:
        """The event message's ``stream`` object."""
        return {"network": self.network, "station": self.station, "location": self.location,
                "channels": list(self.channels)}


def stream_codes(cfg: StreamConfig, fs: float, channels: int, source: str = "<config>") -> StreamCodes:
    """The stream codes of a board at ``fs`` Hz with ``channels`` rows; a rate or layout the codes cannot
    describe is a :class:`UserError` naming the key to set."""
    try:
        band = cfg.band or band_code(fs, broadband=cfg.instrument == "accelerometer")
        orient = orientation_codes(channels, cfg.orientation)
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None
    inst = INSTRUMENT_CODE[cfg.instrument]
    return StreamCodes(cfg.network, cfg.station, cfg.location, tuple(band + inst + o for o in orient))
